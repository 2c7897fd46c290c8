"""The workdir lock: one training process per workdir at a time.

Two trainers on one workdir overwrite each other's checkpoints and truncate each other's
metrics.jsonl; the second is refused before it touches anything. The lock is a file in the
workdir (LOCK_FILE) naming the process id, the host and when it was taken, created atomically
(a hard link of a complete file, so a reader never sees half of it). It is removed on every
exit that runs Python code: a normal end, an exception, SIGINT and SIGTERM (turned into an
exit here where nobody else handles it). Only kill -9 or a lost machine leave it behind; on
the same host such a lock names a process that no longer runs, and the next run takes it
over with a warning. A lock from another host cannot be checked from here, so it is refused
with the command that removes it.

Readers (evaluate.py, tables) do not take the lock: they only read finished checkpoints and
replace their own result files atomically, so they may run beside a training run.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

from utils.errors import DiskFullError, UserError, disk_full

LOCK_FILE = "train.lock"

_HELD = {}  # real path of a lock file -> how many nested holds this process has on it


class LockedError(UserError):
  """The workdir is being trained by another process (or was, on another host)."""


def _process_start(pid: int):
  """When a process started (clock ticks since boot, from /proc), or None where unknown: with
  the pid it names one process, so a recycled pid is not mistaken for the lock's owner."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      # the command name (field 2) may hold spaces and parentheses: split after its last ')'
      return int(f.read().rpartition(")")[2].split()[19])
  except (OSError, ValueError, IndexError):
    return None


def _alive(record: dict) -> bool:
  """Whether the process a lock record names (on this host) still runs."""
  pid = record.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, under another user
    pass
  started = record.get("started")
  return started is None or _process_start(pid) in (None, started)


def _record() -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
          "started": _process_start(os.getpid()), "token": uuid.uuid4().hex}


def _read(path: str):
  """The lock's record; None when there is no lock; {} when it cannot be parsed."""
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}
  return record if isinstance(record, dict) else {}


def _create(path: str, record: dict) -> bool:
  """Writes the lock file if there is none (atomically); False when one exists."""
  tmp = f"{path}.{record['token']}.tmp"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(record, f)
      f.flush()
      os.fsync(f.fileno())
    os.link(tmp, path)  # fails if the lock exists; the file it makes is already complete
    return True
  except FileExistsError:
    return False
  except OSError as e:  # a file system without hard links: exclusive create instead
    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
      raise
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(record, f)
    return True
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)


def _owner(record: dict) -> str:
  return (f"process {record.get('pid', '?')} on host {record.get('host', '?')} (since "
          f"{record.get('since', '?')})")


def refusal(workdir: str, path: str, record: dict) -> LockedError:
  """The one line that refuses a workdir locked by another process."""
  if not record:
    return LockedError(f"workdir {workdir!r} has an unreadable lock file {path}; if no run is "
                       f"training there, delete it (rm {path}) and rerun")
  if record.get("host") != socket.gethostname():
    return LockedError(f"workdir {workdir!r} is locked by a run of {_owner(record)}; if that "
                       f"run is really dead, delete the lock (rm {path}) and rerun")
  return LockedError(f"workdir {workdir!r} is being trained by {_owner(record)}; wait for it "
                     f"to finish, or stop it (kill -TERM {record.get('pid')}) and rerun to "
                     "resume")


def _stale(record: dict) -> bool:
  return bool(record) and record.get("host") == socket.gethostname() and not _alive(record)


def _take_over(path: str, record: dict) -> None:
  """Removes a stale lock, unless another process replaced it meanwhile."""
  aside = f"{path}.stale.{os.getpid()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:  # another process took it over first
    return
  if _read(aside) == record:
    os.unlink(aside)
    logging.warning("taking over the stale lock of %s in %s: that process no longer runs",
                    _owner(record), os.path.dirname(path))
    return
  # a live lock arrived between reading and renaming: put it back
  with contextlib.suppress(FileExistsError):
    os.link(aside, path)
  os.unlink(aside)


def check(workdir: str) -> None:
  """Refuses a workdir that another live process (or another host) holds; no lock is taken."""
  path = os.path.join(workdir, LOCK_FILE)
  if os.path.realpath(path) in _HELD:
    return
  record = _read(path)
  if record is not None and not _stale(record) and record.get("pid") != os.getpid():
    raise refusal(workdir, path, record)


def _acquire(workdir: str, path: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  mine = _record()
  for _ in range(5):
    try:
      if _create(path, mine):
        return mine
    except OSError as e:
      if not disk_full(e):
        raise
      raise DiskFullError(f"no space left on the device while writing the lock {path}; "
                          "nothing was changed. Free space and rerun the same command") from None
    record = _read(path)
    if record is None:  # released between the two calls
      continue
    if not _stale(record):
      raise refusal(workdir, path, record)
    _take_over(path, record)
  raise LockedError(f"could not lock workdir {workdir!r}: {path} keeps changing; is another "
                    "run starting there?")


def _release(path: str, mine: dict) -> None:
  if _read(path) == mine:  # never remove a lock that is not ours
    os.unlink(path)


def _terminate(signum, frame):
  del frame
  raise SystemExit(128 + signum)  # unwinds through the finally blocks that release locks


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds the workdir's lock (creating the workdir) while the block runs.

  Raises LockedError (one line) when another live process holds it or a lock from another
  host is there; takes over a lock whose process is gone, with a warning. Re-entrant within
  a process. SIGTERM, where it would otherwise kill the process outright, ends it with exit
  code 143 after the lock is released (the training loop's own handler, which checkpoints
  first, takes precedence while it runs).
  """
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  if path in _HELD:
    _HELD[path] += 1
    try:
      yield path
    finally:
      _HELD[path] -= 1
    return
  created = not os.path.isdir(workdir)
  mine = _acquire(workdir, path)
  _HELD[path] = 1
  main = threading.current_thread() is threading.main_thread()
  old = signal.getsignal(signal.SIGTERM) if main else None
  if old == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _terminate)
  try:
    yield path
  finally:
    if old == signal.SIG_DFL:
      signal.signal(signal.SIGTERM, old)
    del _HELD[path]
    _release(path, mine)
    if created and not os.listdir(workdir):  # refused before anything was written
      os.rmdir(workdir)

"""The workdir lock (utils/lock.py): one trainer per workdir, released on every exit.

A live owner is a helper process that takes the lock and waits (no training is raced); a
stale lock is one that names a process which has exited, or a recycled pid (a live process
whose start time is not the recorded one). The real two-process check (a second train.py
while the first trains) and the lock left by kill -9 are in tests/test_failure_modes.py,
which has the training runs.
"""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from entry_points import ENV, ROOT

from training import workdir as wd
from utils.lock import LOCK_FILE, LockedError, check, workdir_lock

# takes the lock of argv[1], says so, and holds it until stdin closes (or a signal)
HOLDER = ("import sys; from utils.lock import workdir_lock\n"
          "with workdir_lock(sys.argv[1]):\n"
          "  print('locked', flush=True); sys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
  """(workdir, process) with the workdir locked by a live helper process."""
  w = str(tmp_path / "run")
  p = subprocess.Popen([sys.executable, "-c", HOLDER, w], cwd=ROOT, env=ENV, text=True,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert p.stdout.readline() == "locked\n", p.stderr.read()
  yield w, p
  if p.poll() is None:
    p.kill()
  p.communicate()


def _lock(w):
  with open(os.path.join(w, LOCK_FILE)) as f:
    return json.load(f)


def _write_lock(w, **record):
  os.makedirs(w, exist_ok=True)
  with open(os.path.join(w, LOCK_FILE), "w") as f:
    json.dump(dict({"since": "2026-01-01 00:00:00 UTC", "started": None}, **record), f)


def _dead_pid():
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()  # reaped: no process has this pid until the kernel hands it out again
  return p.pid


def test_lock_names_this_process_and_is_released_after_a_normal_exit(tmp_path):
  w = str(tmp_path / "run")
  with workdir_lock(w):
    record = _lock(w)
    assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())
    with workdir_lock(w):  # re-entrant: a nested hold keeps it
      pass
    assert os.path.exists(os.path.join(w, LOCK_FILE))
    open(os.path.join(w, "config.json"), "w").close()
  assert os.listdir(w) == ["config.json"]


def test_lock_is_released_after_an_exception_and_an_empty_new_workdir_removed(tmp_path):
  w = str(tmp_path / "run")
  with pytest.raises(ZeroDivisionError):
    with workdir_lock(w):
      assert os.path.exists(os.path.join(w, LOCK_FILE))
      1 / 0  # noqa: B018
  assert not os.path.exists(w)  # it made the directory, and nothing else was written


def test_a_live_holder_is_refused_naming_its_pid_and_host(holder):
  w, p = holder
  for refuse in (lambda: workdir_lock(w).__enter__(), lambda: check(w)):
    with pytest.raises(LockedError) as e:
      refuse()
    assert f"process {p.pid} on host {socket.gethostname()}" in str(e.value)
    assert f"kill -TERM {p.pid}" in str(e.value)
  assert _lock(w)["pid"] == p.pid  # the holder's lock is untouched


def test_the_holder_releases_on_sigterm_and_sigint(tmp_path, holder):
  w, p = holder
  p.send_signal(signal.SIGTERM)
  # wait for the signal's effect before communicate() closes the holder's stdin: its read
  # would return at the close, and it would exit 0 without the signal
  p.wait(timeout=30)
  _, err = p.communicate(timeout=30)
  assert p.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
  assert not os.path.exists(os.path.join(w, LOCK_FILE))
  w2 = str(tmp_path / "run2")
  # SIGINT at its default in the helper: a shell starts background jobs with it ignored,
  # which the helper would inherit (Python then installs no KeyboardInterrupt)
  q = subprocess.Popen([sys.executable, "-c", HOLDER, w2], cwd=ROOT, env=ENV, text=True,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  assert q.stdout.readline() == "locked\n"
  q.send_signal(signal.SIGINT)  # Python's KeyboardInterrupt unwinds through the release
  q.wait(timeout=30)
  q.communicate(timeout=30)
  assert q.returncode != 0 and not os.path.exists(os.path.join(w2, LOCK_FILE))


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
  w = str(tmp_path / "run")
  dead = _dead_pid()
  _write_lock(w, pid=dead, host=socket.gethostname())
  with caplog.at_level(logging.WARNING), workdir_lock(w):
    assert _lock(w)["pid"] == os.getpid()
  assert any("stale lock" in r.getMessage() and f"process {dead} " in r.getMessage()
             for r in caplog.records), caplog.text
  # a recycled pid: the recorded process start time is not the live process's
  _write_lock(w, pid=os.getppid(), host=socket.gethostname(), started=1)
  check(w)  # not refused: stale
  with workdir_lock(w):
    assert _lock(w)["pid"] == os.getpid()


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
  w = str(tmp_path / "run")
  _write_lock(w, pid=_dead_pid(), host="node-17")
  path = os.path.join(w, LOCK_FILE)
  with pytest.raises(LockedError) as e:
    with workdir_lock(w):
      pass
  assert "host node-17" in str(e.value) and f"rm {os.path.realpath(path)}" in str(e.value)
  assert _lock(w)["host"] == "node-17"  # left for its owner


def test_prepare_refuses_a_workdir_another_process_trains_and_overwrite_keeps_the_lock(
    tmp_path, holder):
  from configs import mlm_extrapolation
  config = mlm_extrapolation.get_config("smoke")
  w, p = holder
  with pytest.raises(LockedError):
    wd.prepare(w, config)
  assert os.listdir(w) == [LOCK_FILE]  # nothing written
  mine = str(tmp_path / "mine")
  with workdir_lock(mine):
    wd.prepare(mine, config)
    open(os.path.join(mine, "metrics.jsonl"), "w").close()
    wd.prepare(mine, config, overwrite=True)
    assert sorted(os.listdir(mine)) == ["config.json", LOCK_FILE]
  assert os.listdir(mine) == ["config.json"]


def test_a_reader_takes_no_lock_and_leaves_unfinished_checkpoints_alone(tmp_path, holder):
  # evaluate.py beside a training run: the run's save in progress is a temporary directory,
  # which a trainer's checkpointer deletes on start (an interrupted save) and a reader must not
  from training.checkpoint import Checkpointer
  w, _ = holder
  in_progress = os.path.join(w, "checkpoints", "12.orbax-checkpoint-tmp-3")
  os.makedirs(in_progress)
  Checkpointer(w, reader=True).close()
  time.sleep(0.5)  # a trainer's checkpointer deletes them in a background thread
  assert os.path.isdir(in_progress)
  # (a trainer's does delete it, by its first save at the latest: the check above can fail)
  trainer = Checkpointer(w, async_save=False)
  trainer.save(1, {"w": np.zeros(2)})
  trainer.close()
  assert not os.path.exists(in_progress)

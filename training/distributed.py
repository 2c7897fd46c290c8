"""Several processes (hosts) training one run: start-up, who writes what, agreeing to stop.

Each process drives its own devices; together they form the run's mesh (training/sharding.py)
and each uploads only its own rows of every batch. The workdir is shared (one filesystem):
- process 0 (the primary) holds the workdir lock, prepares the workdir (config.json, and the
  deletion of --overwrite) before the others read it, writes the metrics and prints;
- every process takes part in every checkpoint save and restore (orbax writes each array's
  shards from the process that holds them, and the primary finalises the step);
- a SIGTERM (or Ctrl-C) to any process stops all of them after the same step, which they
  checkpoint together;
- the end-of-run evaluation runs in every process on a host copy of the parameters (the same
  numbers; the files are replaced atomically with the same content).
"""
from __future__ import annotations

import os
import threading
import time

import jax
import numpy as np

from utils.cli import leave
from utils.errors import ConfigError, PeerLostError, first_line, mentions

# the usual names; jax itself reads JAX_COORDINATOR_ADDRESS, and detects the process count and
# id under SLURM, Open MPI and other launchers (then only the address may be needed, or none)
ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
       "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def settings(coordinator_address=None, num_processes=None, process_id=None) -> dict:
  """The flags given, else the environment's values; {} for a single-process run."""
  given = dict(coordinator_address=coordinator_address, num_processes=num_processes,
               process_id=process_id)
  out = {}
  for key, var in ENV.items():
    value = given[key] if given[key] is not None else os.environ.get(var) or None
    if value is not None:
      try:
        out[key] = value if key == "coordinator_address" else int(value)
      except ValueError:
        raise ConfigError(f"{var}={value!r} is not an integer") from None
  if not out:
    return {}
  n, i = out.get("num_processes"), out.get("process_id")
  if n is not None and n < 1:
    raise ConfigError(f"--num_processes={n}: give the number of processes of the run (>= 1)")
  if i is not None and n is not None and not 0 <= i < n:
    raise ConfigError(f"--process_id={i} is not one of the run's {n} processes (0 .. {n - 1})")
  return out


# how long the processes may take to all join (jax's own default): jax then aborts from C++
JOIN_TIMEOUT = 300


def initialize(coordinator_address=None, num_processes=None, process_id=None,
               join_timeout: int = JOIN_TIMEOUT, peer_timeout: int | None = None) -> None:
  """Joins the run's processes (jax.distributed.initialize) when any setting is given; before
  anything else touches jax. CPU devices talk through gloo (jax's CPU collectives).

  Processes that do not all join within join_timeout seconds (one never started, a wrong
  address or count) make jax abort the process from C++ with a stack trace; a timer a second
  earlier says so in one line and exits 2 instead. peer_timeout: watch_peers'. jax's own
  heartbeat timeout is kept at 4x that (100 s at least, its default): jax declared a killed
  process dead about 57 s after the kill with its default of 100 s, so a watch of 60 s
  raced it; at 30 s against 120 the watch speaks first."""
  kwargs = settings(coordinator_address, num_processes, process_id)
  if not kwargs or kwargs.get("num_processes") == 1:
    return
  if join_timeout < 2:
    raise ConfigError(f"--join_timeout={join_timeout}: give the seconds the processes may take "
                      "to all join (>= 2)")
  if peer_timeout is not None and peer_timeout < 1:
    raise ConfigError(f"--peer_timeout={peer_timeout}: give the seconds of silence after which "
                      "another process counts as lost (>= 1)")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  watchdog = threading.Timer(join_timeout - 1, _not_joined, (kwargs, join_timeout))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=join_timeout,
                               heartbeat_timeout_seconds=max(100, 4 * (peer_timeout or 0)))
  finally:
    watchdog.cancel()


def _not_joined(kwargs: dict, timeout: int) -> None:
  n, i = kwargs.get("num_processes"), kwargs.get("process_id")
  count = f"all {n} processes" if n else "all the processes"
  # jax's connect is blocked in C++ and would abort the process a second later: leave now
  leave(2, f"not {count} of the run joined at "
        f"{kwargs.get('coordinator_address', 'the coordinator')} within {timeout} s "
        f"(this is process {i if i is not None else '?'}); start every process with the same "
        "--coordinator_address and --num_processes and its own --process_id, process 0 on "
        "the coordinator's host, or allow more time with --join_timeout")


# ----------------------------------------------------------------------------- lost processes
# A process killed mid-run (SIGKILL, a lost host) leaves the others either with an error from
# a collective (below) or blocked in one until jax's heartbeat timeout aborts them from C++
# with a stack trace. Each process therefore writes a counter to the coordination service's
# key-value store from a thread; one whose partner's counter has not moved for peer_timeout
# seconds (or that cannot reach the store) stops in one line. A process that finished writes
# DONE; one that failed (a refusal, an error) writes FAILED, and the others stop at once.
PEER_TIMEOUT = 30
_ALIVE = "attention_lab/alive"
_DONE, _FAILED = "done", "failed"
_watch = {}


def watch_peers(workdir: str, timeout: int = PEER_TIMEOUT) -> None:
  """Starts the watch (a daemon thread) in a run of several processes; finished() ends it."""
  if not several():
    return
  try:  # jax's coordination client has no public handle: without it, no watch
    from jax._src.distributed import global_state
    client = global_state.client
  except (ImportError, AttributeError):
    return
  if client is None:
    return
  me, stop = jax.process_index(), threading.Event()
  period = max(0.5, min(5.0, timeout / 10))
  _watch.update(client=client, stop=stop, period=period)

  def run():
    beat, seen = 0, {}  # seen: process -> (its last counter, when it last changed)
    while not stop.is_set():
      beat += 1
      try:
        client.key_value_set(f"{_ALIVE}/{me}", str(beat), allow_overwrite=True)
        values = dict(client.key_value_dir_get(_ALIVE))
      except Exception as e:  # noqa: BLE001 - the store lives in process 0
        if not stop.is_set():
          _lost(f"the run's coordinator (process 0) is unreachable ({first_line(e, 120)})",
                workdir)
        return
      now = time.monotonic()
      for i in range(jax.process_count()):
        value = values.get(f"{_ALIVE}/{i}")
        if i == me or value == _DONE:
          continue
        if value == _FAILED and not stop.is_set():
          _lost(f"process {i} of the run stopped with an error (its output says which)")
        if i not in seen or seen[i][0] != value:
          seen[i] = (value, now)
        elif now - seen[i][1] > timeout and not stop.is_set():
          _lost(f"process {i} of the run has given no sign of life for {timeout} s (killed, "
                "or its host lost)", workdir)
      stop.wait(period)
  threading.Thread(target=run, name="watch_peers", daemon=True).start()


def finished(failed: bool = False) -> None:
  """Ends the watch: this process is done, or failed (the others then stop at once, naming
  it, instead of waiting for its counter or for it in a collective)."""
  if not _watch or _watch["stop"].is_set():
    return
  _watch["stop"].set()
  _mark(_FAILED if failed else _DONE)
  if failed:
    _let_the_others_go()


def _mark(status: str) -> None:
  try:
    _watch["client"].key_value_set(f"{_ALIVE}/{jax.process_index()}", status,
                                   allow_overwrite=True)
  except Exception:  # noqa: BLE001 - the coordinator may be gone
    pass


def _let_the_others_go() -> None:
  """Process 0 hosts the coordination service: when it stops on an error it waits until the
  others have seen that and stopped, since its exit would make jax abort them from C++
  before their watch speaks. It waits for no one whose counter stands still for two of the
  watch's periods (the lost process itself), and a few periods at most."""
  if not is_primary():
    return
  period = _watch["period"]
  start = time.monotonic()
  first, changed = None, {}
  while time.monotonic() < start + 3 * period + 2:
    try:
      values = dict(_watch["client"].key_value_dir_get(_ALIVE))
    except Exception:  # noqa: BLE001
      return
    first = first or values
    now = time.monotonic()
    for key, value in values.items():
      if value != first.get(key):
        changed[key] = now
    waiting = [i for i in range(jax.process_count())
               if values.get(f"{_ALIVE}/{i}") not in (_DONE, _FAILED)
               and now - changed.get(f"{_ALIVE}/{i}", start) < 2 * period]
    if not waiting:
      time.sleep(0.5)  # their exit after the mark
      return
    time.sleep(0.2)


def _lost(what: str, workdir: str | None = None) -> None:
  """Stops this process in one line: what happened, and (given the workdir) what is intact."""
  message = lost_message(what, workdir)
  finished(failed=True)
  leave(2, message)  # the main thread is blocked in a collective that would never return


def lost_message(what: str, workdir: str | None) -> str:
  stop = f"{what}, so process {jax.process_index()} stops too"
  if workdir is None:
    return stop
  from training.checkpoint import intact
  return (f"{stop}; in {workdir}, {intact(os.path.join(workdir, 'checkpoints'))}. Rerun every "
          "process's command to resume")


# How a collective reports that a process of the run is gone (gloo, jax's CPU collectives:
# "Gloo AllGather failed: ... Read error ...: Connection reset by peer" mid-run, and "Gloo
# context initialization failed: ... Connection refused" when it dies before the first one)
_LOST_TEXT = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "Connection refused")


def lost_peer(exc: BaseException, workdir: str) -> PeerLostError | None:
  """The one-line error for exc when it says that another process of the run stopped mid-run
  (then this one cannot go on either), else None."""
  if not several() or not mentions(exc, _LOST_TEXT):
    return None
  return PeerLostError(lost_message(
      f"another process of the run stopped mid-run ({first_line(exc, 160)})", workdir))


def is_primary() -> bool:
  return jax.process_index() == 0


def several() -> bool:
  return jax.process_count() > 1


def sync(name: str) -> None:
  """Every process waits here until all have arrived."""
  if several():
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """Whether flag is true in any process (every process gets the same answer)."""
  if not several():
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def host_copy(tree):
  """A tree of arrays split over the processes' devices as whole numpy arrays, in every
  process (for work that each process does alone: evaluation). One process: unchanged."""
  if not several():
    return tree
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)

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
import sys
import threading

import jax
import numpy as np

from utils.errors import ConfigError

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
               join_timeout: int = JOIN_TIMEOUT) -> None:
  """Joins the run's processes (jax.distributed.initialize) when any setting is given; before
  anything else touches jax. CPU devices talk through gloo (jax's CPU collectives).

  Processes that do not all join within join_timeout seconds (one never started, a wrong
  address or count) make jax abort the process from C++ with a stack trace; a timer a second
  earlier says so in one line and exits 2 instead."""
  kwargs = settings(coordinator_address, num_processes, process_id)
  if not kwargs or kwargs.get("num_processes") == 1:
    return
  if join_timeout < 2:
    raise ConfigError(f"--join_timeout={join_timeout}: give the seconds the processes may take "
                      "to all join (>= 2)")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  watchdog = threading.Timer(join_timeout - 1, _not_joined, (kwargs, join_timeout))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=join_timeout)
  finally:
    watchdog.cancel()


def _not_joined(kwargs: dict, timeout: int) -> None:
  n, i = kwargs.get("num_processes"), kwargs.get("process_id")
  count = f"all {n} processes" if n else "all the processes"
  print(f"error: not {count} of the run joined at "
        f"{kwargs.get('coordinator_address', 'the coordinator')} within {timeout} s "
        f"(this is process {i if i is not None else '?'}); start every process with the same "
        "--coordinator_address and --num_processes and its own --process_id, process 0 on "
        "the coordinator's host, or allow more time with --join_timeout", file=sys.stderr)
  sys.stderr.flush()
  os._exit(2)  # jax's connect is blocked in C++ and would abort the process a second later


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

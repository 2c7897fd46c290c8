"""Train a model from a config file.

  python train.py --config configs/mlm_extrapolation.py[:variant,...] --workdir DIR \
      [--config.train.steps=100 ...] [--overwrite]

The config's task (config.task: mlm, contrastive, ...; training/tasks.py) trains the run and
evaluates it at the end. Rerunning the same command on an existing workdir resumes where it
stopped; rerunning it with a larger --config.train.steps (or another change listed in
training/workdir.py's RESUMABLE) continues a finished run from its last checkpoint.
"""
from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from utils.cli import run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variants].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the workdir first and start again.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after", None, "Stop after this many steps of this process, with a checkpoint, as a "
    "preempted job would; the same command continues the run.")
# several processes (hosts) training one run (training/distributed.py); default: the usual
# environment variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), else one
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for a run of several processes.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0: the primary).")
_PEER_TIMEOUT = flags.DEFINE_integer(
    "peer_timeout", 30, "Seconds without a sign of life from another process of the run "
    "(killed, its host lost) before this one stops with one line.")
_JOIN_TIMEOUT = flags.DEFINE_integer(
    "join_timeout", 300, "Seconds the processes of a run may take to all join; then each "
    "that waited stops with one line.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> int:
  del argv
  # imported here, after absl has parsed the flags: a bad flag fails before JAX loads
  primary, distributed = True, None
  if _COORDINATOR.value or _NUM_PROCESSES.value or _PROCESS_ID.value is not None or any(
      k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")):
    from training import distributed
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           _JOIN_TIMEOUT.value, _PEER_TIMEOUT.value)
    distributed.watch_peers(_WORKDIR.value, _PEER_TIMEOUT.value)
    primary = distributed.is_primary()
  try:
    result, task = _train(primary, distributed)
  except BaseException:
    if distributed:  # the others stop at once, naming this process, instead of waiting
      distributed.finished(failed=True)
    raise
  if distributed:
    distributed.finished()
  text = task.report(result) if primary else ""
  if text:
    print(text)
  return 0


def _train(primary: bool, distributed):
  """(result, task) of the config's task trained in the workdir."""
  import contextlib

  from utils.lock import workdir_lock
  # one trainer per workdir: a second is refused in one line before it touches anything (and
  # before the task's imports); a workdir that the lock created is removed if left empty. In
  # a run of several processes the primary holds it for all.
  with workdir_lock(_WORKDIR.value) if primary else contextlib.nullcontext():
    from training.tasks import get_task
    task = get_task(_CONFIG.value)
    try:
      return task.train(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                        progress=_PROGRESS.value, stop_after=_STOP_AFTER.value), task
    except Exception as e:  # noqa: BLE001 - a collective's error names a lost process in text
      lost = distributed and distributed.lost_peer(e, _WORKDIR.value)
      if lost:
        raise lost from None
      raise


if __name__ == "__main__":
  run_main(main)

"""Orbax checkpoints of the train state (plus a small JSON of metadata), in one place.

A workdir with a checkpoint always resumes. Orbax writes each step into a temporary directory
and renames it when complete, so an interrupted save never becomes the latest checkpoint; a
latest checkpoint that is nevertheless unreadable (a damaged disk, a truncated copy) is skipped
with a warning in favour of the one before it. A save that runs out of disk space is one line
(DiskFullError) naming the step and the checkpoint that is intact, and leaves no partial
directory of its step behind.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading

import jax
import orbax.checkpoint as ocp

from training.optimizer import make_optimizer
from training.state import TrainState
from utils.errors import DiskFullError, disk_full, first_line


# whether the filters below are installed, and whether a save of this process hit a full disk
_SEEN = {"installed": False, "disk_full": False}


class _DropDiskFullNoise(logging.Filter):
  """When a save runs out of space, orbax's background threads log a traceback per array and
  per stage (and asyncio one per unretrieved future); the main thread reports the failure
  once, as one line. These records are dropped; every other record passes."""

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if disk_full(exc) or (record.name == "absl" and "orbax" in record.pathname and
                          "No space left on device" in record.getMessage()):
      _SEEN["disk_full"] = True
      return False
    return True


def _after_failed_save(hook):
  """A sys / threading exception hook that drops the errors of a failed save's remaining
  callbacks: its disk-full errors, and 'Event loop is closed' from tensorstore's callbacks
  that arrive after orbax closed the event loop of the failed operation. These can come
  before the failure reaches the main thread, which reports it once."""
  def quiet(*args):
    exc = getattr(args[0], "exc_value", args[1] if len(args) > 1 else None)
    if disk_full(exc) or (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
                          and _raised_in(exc, "call_soon_threadsafe")):
      _SEEN["disk_full"] = True
      return
    hook(*args)
  return quiet


def _raised_in(exc: BaseException, function: str) -> bool:
  tb = exc.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_name == function:
      return True
    tb = tb.tb_next
  return False


def _quiet_failed_saves() -> None:
  if _SEEN["installed"]:
    return
  _SEEN["installed"] = True
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_DropDiskFullNoise())
  sys.excepthook = _after_failed_save(sys.excepthook)
  sys.unraisablehook = _after_failed_save(sys.unraisablehook)
  threading.excepthook = _after_failed_save(threading.excepthook)


class Checkpointer:
  """reader=True: only restores. A reader leaves the unfinished (temporary) checkpoint
  directories alone: they may be the saves in progress of a run training in the workdir."""

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = True,
               reader: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not reader:
      _quiet_failed_saves()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=not reader))
    self.pending = None  # the step whose asynchronous save may still be running
    self.failed = False  # a save ran out of space: the manager is not to be waited on again

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict | None = None, force: bool = False) -> None:
    if step in (self.manager.all_steps() or []):
      return
    # The save is asynchronous and the caller goes on (the training loop keeps adding to its
    # logging sums): snapshot the metadata now, or the file gets a later step's values.
    meta = json.loads(json.dumps(meta or {}))
    # an asynchronous save fails in the background, and orbax raises its error from the next
    # call: finish the previous save first, so that a full disk names the step it hit
    self.wait()
    with self._writing(step):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
    self.pending = step

  def wait(self) -> None:
    if self.pending is None:
      return
    with self._writing(self.pending):
      self.manager.wait_until_finished()
    self.pending = None

  @contextlib.contextmanager
  def _writing(self, step: int):
    """A full disk while writing `step`: its partial directory is deleted (a resume restores
    the checkpoint before it) and the error becomes one line (DiskFullError)."""
    try:
      yield
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise several types
      if not disk_full(e):
        raise
      self.failed, self.pending = True, None
      _SEEN["disk_full"] = True
      for name in os.listdir(self.directory):
        if name == str(step) or name.startswith(f"{step}.orbax-checkpoint-tmp"):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      raise DiskFullError(
          f"no space left on the device while writing the checkpoint of step {step} in "
          f"{self.directory} ({first_line(e, 160)}); {self.intact()}. Free "
          "space and rerun the same command to resume") from None

  def intact(self) -> str:
    return intact(self.directory)

  def restore(self, abstract_state):
    """(step, state, meta) from the newest readable checkpoint, or None if there is none."""
    steps = sorted(self.manager.all_steps() or [], reverse=True)
    for i, step in enumerate(steps):
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      except Exception as e:  # noqa: BLE001 - any failure to read means: try an older one
        older = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "none left"
        logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); %s", step,
                        self.directory, type(e).__name__, first_line(e), older)
        continue
      return step, out["state"], dict(out["meta"] or {})
    return None

  def close(self) -> None:
    if not self.failed:
      self.wait()
      self.manager.close()
      return
    # after a failed save, orbax's threads may still be failing: what they raise now was
    # already reported in one line
    with contextlib.suppress(Exception):
      self.manager.close()


def abstract(tree, shardings=None):
  """Shapes and dtypes only (jax.eval_shape-style), to restore without allocating twice.

  shardings: a tree of the same structure (training/sharding.py), or one sharding for every
  array; the restore lays the arrays out so, whatever the device count that saved them.
  None: every array whole on the first device."""
  if shardings is None:
    shardings = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def finished_steps(directory: str) -> list:
  """The steps of the finished checkpoints in a checkpoint directory, from the names alone
  (an unfinished one is a temporary directory, 'N.orbax-checkpoint-tmp...')."""
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(x) for x in names if x.isdigit())


def intact(directory: str) -> str:
  """What a resume would restore from a checkpoint directory: its newest finished checkpoint,
  in words for a one-line error."""
  steps = finished_steps(directory)
  return (f"the checkpoint of step {steps[-1]} is intact" if steps else
          "there is no checkpoint yet: the run will start again from step 0")


def latest_step(workdir: str):
  """Newest finished checkpoint step in a workdir, read from the directory names alone."""
  steps = finished_steps(os.path.join(workdir, "checkpoints"))
  return steps[-1] if steps else None


def restore_params(workdir: str, init_fn, train_cfg):
  """(step, params) of a workdir's newest readable checkpoint, or None if it has none.

  init_fn() returns parameters of the right shapes (only traced, never run).
  """
  ckpt = Checkpointer(workdir, async_save=False, reader=True)
  try:
    restored = ckpt.restore(abstract(jax.eval_shape(
        lambda: TrainState.create(init_fn(), make_optimizer(train_cfg)))))
  finally:
    ckpt.close()
  return None if restored is None else (restored[0], restored[1].params)

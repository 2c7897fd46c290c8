"""Orbax checkpoints of the train state (plus a small JSON of metadata), in one place.

A workdir with a checkpoint always resumes. Orbax writes each step into a temporary directory
and renames it when complete, so an interrupted save never becomes the latest checkpoint; a
latest checkpoint that is nevertheless unreadable (a damaged disk, a truncated copy) is skipped
with a warning in favour of the one before it.
"""
from __future__ import annotations

import json
import logging
import os

import jax
import orbax.checkpoint as ocp

from training.optimizer import make_optimizer
from training.state import TrainState


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict | None = None, force: bool = False) -> None:
    if step in (self.manager.all_steps() or []):
      return
    # The save is asynchronous and the caller goes on (the training loop keeps adding to its
    # logging sums): snapshot the metadata now, or the file gets a later step's values.
    meta = json.loads(json.dumps(meta or {}))
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

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
                        self.directory, type(e).__name__, str(e).splitlines()[0][:200], older)
        continue
      return step, out["state"], dict(out["meta"] or {})
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract(tree):
  """Shapes and dtypes only (jax.eval_shape-style), to restore without allocating twice."""
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def latest_step(workdir: str):
  """Newest finished checkpoint step in a workdir, read from the directory names alone."""
  d = os.path.join(workdir, "checkpoints")
  steps = [int(x) for x in os.listdir(d) if x.isdigit()] if os.path.isdir(d) else []
  return max(steps) if steps else None


def restore_params(workdir: str, init_fn, train_cfg):
  """(step, params) of a workdir's newest readable checkpoint, or None if it has none.

  init_fn() returns parameters of the right shapes (only traced, never run).
  """
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    restored = ckpt.restore(abstract(jax.eval_shape(
        lambda: TrainState.create(init_fn(), make_optimizer(train_cfg)))))
  finally:
    ckpt.close()
  return None if restored is None else (restored[0], restored[1].params)

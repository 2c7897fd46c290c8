"""The training loop shared by every task: resume, steps, metrics, checkpoints, signals.

A task supplies an initial-parameter function, a loss, and a batch-of-step function; this loop
owns everything that must be the same for every trainer (and is tested once).
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

from training import distributed
from training.checkpoint import Checkpointer, abstract
from training.metrics import MetricWriter, truncate_after
from training.optimizer import learning_rate_schedule, make_optimizer
from training.sharding import (batch_sharding, check_batch, make_mesh, put_batch, replicated,
                               state_shardings)
from training.state import TrainState
from training.step import make_train_step
from training.workdir import describe_changes
from utils.errors import DiskFullError, UserError, disk_full


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0) -> tqdm:
  """The bar of long work (training, evaluation by length) on stderr; off when not enabled
  or when stderr is not a terminal, so that logs and pipes get no bar."""
  return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True,
              disable=not (enabled and sys.stderr.isatty()))


class NonFiniteError(UserError):
  pass


class _NoMetrics:
  """The metric writer of a process other than the primary: the primary writes the rows."""
  path = "(process 0's metrics)"

  def write(self, step, row):
    del step, row

  def flush(self):
    pass

  def close(self):
    pass


@dataclasses.dataclass
class FitResult:
  state: Any
  step: int
  interrupted: bool
  skipped_steps: int


_ACTIVE = []  # the flag of the outermost stop_requests() in force, if any


@contextlib.contextmanager
def stop_requests():
  """SIGTERM / SIGINT set a flag instead of killing the process mid-step.

  Nested uses share the outermost flag: a sweep that trains several runs in one process sees
  a signal that arrived between two runs, and the run in progress sees one that arrived
  while it was still loading its data.
  """
  if _ACTIVE:
    yield _ACTIVE[0]
    return
  flag = {"signal": None}

  def handler(signum, frame):
    del frame
    if flag["signal"] is not None:  # a second Ctrl-C means: now
      raise KeyboardInterrupt
    flag["signal"] = signal.Signals(signum).name

  old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  _ACTIVE.append(flag)
  try:
    yield flag
  finally:
    _ACTIVE.pop()
    for s, h in old.items():
      signal.signal(s, h)


@contextlib.contextmanager
def _disk_full_as_one_line(path: str, step: int, ckpt: Checkpointer):
  """A full disk while writing the metrics: one line (DiskFullError), saying what a resume
  restores (it rewrites the rows after that checkpoint)."""
  try:
    yield
  except OSError as e:
    if not disk_full(e):
      raise
    ckpt.wait()  # the save in flight decides which checkpoint is intact
    raise DiskFullError(
        f"no space left on the device while writing {path} at step {step}; "
        f"{ckpt.intact()}. Free space and rerun the same command to resume") from None


def fit(config, workdir: str, *, init_params: Callable[[Any], Any], loss_fn: Callable | None,
        batch_fn: Callable[[int], Any], tokens_per_step: int, progress: bool = True,
        stop_after: int | None = None, grad_fn: Callable | None = None,
        changes=()) -> FitResult:
  """Trains from the latest checkpoint in workdir (or from scratch) to config.train.steps.

  stop_after: leave after this many steps of this process, as a preempted job would (a
  checkpoint is saved; the same command continues), e.g. to fit a scheduler's time limit.
  changes: what differs from the config the run was started with (training.workdir.prepare),
  named in the line that says the run resumed.
  """
  t = config.train
  tx = make_optimizer(t)
  seed_key = jax.random.PRNGKey(config.seed)
  init_key, step_key = jax.random.split(seed_key)

  # the mesh of config.mesh (training/sharding.py): the batch split over every device, the
  # state over mesh.fsdp; keys as numpy, the same value on every process
  mesh = make_mesh(config.get("mesh"))
  check_batch(t.batch_size, mesh)
  init_key, step_key = np.asarray(init_key), np.asarray(step_key)
  create = lambda key: TrainState.create(init_params(key), tx)  # noqa: E731
  shapes = jax.eval_shape(create, init_key)
  layout = state_shardings(mesh, shapes)
  # one compiled program instead of hundreds of op-by-op dispatches (1.2 s vs 3.4 s for the
  # smoke model; and the compilation cache can keep it), made in its final layout
  fresh_state = jax.jit(create, in_shardings=replicated(mesh), out_shardings=layout)

  ckpt = Checkpointer(workdir, keep=t.keep_checkpoints)
  # restored onto this mesh whatever the device count that saved it
  restored = ckpt.restore(abstract(shapes, layout))
  if restored is None:
    state, start, meta = fresh_state(init_key), 0, {}
  else:
    start, state, meta = restored
    if distributed.is_primary():
      print(f"resuming from step {start} of {workdir}" +
            (f": {describe_changes(changes)}" if changes else ""), file=sys.stderr)
  skipped = int(meta.get("skipped_steps", 0))
  # the running sums of the logging window in progress, so that a run stopped between two
  # log rows writes the same rows after resuming as an uninterrupted run
  sums, window = dict(meta.get("log_sums", {})), int(meta.get("log_steps", 0))
  metrics_path = f"{workdir}/metrics.jsonl"
  primary = distributed.is_primary()  # the one process that writes metrics and prints
  if primary:
    truncate_after(metrics_path, start)  # rows past the checkpoint are rewritten identically
  writer = MetricWriter(workdir) if primary else _NoMetrics()
  schedule = learning_rate_schedule(t)
  batches = batch_sharding(mesh)
  train_step = make_train_step(loss_fn, tx, grad_fn=grad_fn,
                               shardings=(layout, batches, replicated(mesh)))

  step, interrupted = start, False
  stop_at = t.steps if stop_after is None else min(t.steps, start + stop_after)
  bar = progress_bar(t.steps, "train", progress and primary, initial=start)
  last_time, last_step = time.perf_counter(), start

  def meta_now():
    return {"skipped_steps": skipped, "log_sums": sums, "log_steps": window}

  try:
    with stop_requests() as stop:
      while step < t.steps:
        # a signal to any process stops them all after the same step
        if distributed.any_process(stop["signal"] is not None) or step >= stop_at:
          interrupted = True
          break
        state, m = train_step(state, put_batch(batch_fn(step), batches), step_key)
        m = jax.device_get(m)
        if not m["finite"]:
          bad = "loss" if not np.isfinite(m["loss"]) else "gradients"
          if t.on_nonfinite != "skip":
            raise NonFiniteError(
                f"non-finite {bad} at step {step} (loss={m['loss']}, grad_norm="
                f"{m['grad_norm']}); the state was not updated and the last checkpoint "
                f"(step {ckpt.latest_step()}) is kept. Lower train.learning_rate, check the "
                "data, or set train.on_nonfinite=skip to skip such steps")
          skipped += 1
        step += 1
        window += 1
        for k, v in m.items():
          if k != "finite" and np.isfinite(v):
            sums[k] = sums.get(k, 0.0) + float(v)
        bar.update(1)
        if step % t.log_every == 0 or step == t.steps:
          now = time.perf_counter()
          row = {k: v / window for k, v in sums.items()}
          row.update(learning_rate=float(schedule(step - 1)), skipped_steps=skipped,
                     tokens_per_sec=(step - last_step) * tokens_per_step / (now - last_time))
          with _disk_full_as_one_line(writer.path, step, ckpt):
            writer.write(step, row)
          # (a window of only skipped steps has no finite loss to show)
          bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}",
                          tok_s=f"{row['tokens_per_sec']:.0f}")
          last_time, last_step, sums, window = now, step, {}, 0
        if step % t.checkpoint_every == 0:
          ckpt.save(step, state, meta_now())
      ckpt.save(step, state, meta_now(), force=True)
      with _disk_full_as_one_line(writer.path, step, ckpt):
        writer.flush()
  except BaseException:
    # the error in flight is what the user sees; closing after it must not replace it
    bar.close()
    with contextlib.suppress(Exception):
      writer.close()
    with contextlib.suppress(Exception):
      ckpt.close()
    raise
  bar.close()
  writer.close()
  ckpt.close()
  if distributed.several():  # evaluation runs in each process on whole arrays
    state = state.replace(params=distributed.host_copy(state.params))
  if interrupted and primary:
    why = stop["signal"] or ("a signal to another process" if step < stop_at else
                             f"--stop_after={stop_after}")
    print(f"stopped by {why} at step {step}; checkpoint saved in {workdir}. "
          "Rerun the same command to resume.", file=sys.stderr)
  return FitResult(state, step, interrupted, skipped)

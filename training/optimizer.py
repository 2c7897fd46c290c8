"""The optimizer, built in one place from config.train."""
from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import optax

from utils.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(t) -> optax.Schedule:
  """Linear warmup to learning_rate, then cosine / linear decay to end_lr_fraction of it."""
  if t.schedule not in SCHEDULES:
    raise ConfigError(f"unknown train.schedule {t.schedule!r}; valid names: {list(SCHEDULES)}")
  peak, warm, steps = t.learning_rate, t.warmup_steps, t.steps
  end = peak * t.end_lr_fraction
  warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
  decay_steps = max(steps - warm, 1)
  if t.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=t.end_lr_fraction)
  elif t.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  else:
    decay = optax.constant_schedule(peak)
  return optax.join_schedules([warmup, decay], [warm])


def check_train_section(t, min_steps: int = 1) -> None:
  """The train fields every task reads the same way, refused in one line before any data is
  read: steps (at least min_steps) and batch size, schedule, on_nonfinite."""
  if t.steps < min_steps or t.batch_size <= 0:
    raise ConfigError(f"train.steps must be at least {min_steps} and train.batch_size positive"
                      f" (got {t.steps} and {t.batch_size})")
  if t.schedule not in SCHEDULES:
    raise ConfigError(f"unknown train.schedule {t.schedule!r}; valid names: {list(SCHEDULES)}")
  if t.on_nonfinite not in ("stop", "skip"):
    raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got {t.on_nonfinite!r}")


def decay_mask(params):
  """Weight decay on matrices only: not on biases, norm scales, or the output bias.

  A bias is the leaf `bias` beside a `kernel`; it is not always 1-D (the attention layer's
  query / key / value biases are [heads, head_dim]), so the rank alone cannot tell. Tables
  that are looked up (embeddings, learned and relative position tables, T5's bucket table
  at encoder/relative_position/bias, which has no kernel beside it) are decayed like the
  token embedding.
  """
  def mask(tree):
    if not isinstance(tree, Mapping):
      return jnp.ndim(tree) >= 2
    has_kernel = "kernel" in tree
    return type(tree)({k: (False if k == "bias" and has_kernel else mask(v))
                       for k, v in tree.items()})

  return mask(params)


def make_optimizer(t) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(t.clip_norm) if t.clip_norm > 0 else optax.identity(),
      optax.adamw(learning_rate_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                  weight_decay=t.weight_decay, mask=decay_mask),
  )

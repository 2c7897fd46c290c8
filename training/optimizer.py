"""The optimizer, built in one place from config.train."""
from __future__ import annotations

from utils.errors import ConfigError

import jax
import optax

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


def decay_mask(params):
  """Weight decay on matrices only: not on biases, norm scales, or the output bias."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(t) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(t.clip_norm) if t.clip_norm > 0 else optax.identity(),
      optax.adamw(learning_rate_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                  weight_decay=t.weight_decay, mask=decay_mask),
  )

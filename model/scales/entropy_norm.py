"""Entropy normalisation of attention rows (docs/techniques.md section 1.1).

A distribution p is raised to a power and renormalised, p_i^g / sum_j p_j^g, with g > 0 chosen
so that its entropy is a target H*: the order of the p_i is kept, and g < 1 flattens, g > 1
sharpens. For an attention row p = softmax(s), p^g / sum p^g = softmax(g s): the power is a
per-row factor on the logits. The entropy H(g) falls monotonically in g (dH/dg = -g Var(s)
under softmax(g s)), from log n at g -> 0 to log(#maxima) as g -> inf, so one g solves it; it
is found by Newton's method in log g, kept inside a bisection bracket, for a fixed number of
steps (so it compiles).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.attention import ATTENTIONS
from model.masks import num_valid_keys
from model.positions.rope_scaling import ORIGINAL_LENGTH, require_original_length
from model.scales.standard import standard
from model.variants import Field, ScaleVariant
from utils.errors import ConfigError

LOG_G_BOUND = 16.0  # g in [e^-16, e^16]: from uniform to one-hot for any float32 logits
STEPS = 24  # Newton steps from g = 1: quadratic near the root, bisection where it overshoots


def entropy_and_variance(log_g, logits, mask):
  """(H, Var) of q = softmax(g s) over the valid keys: its entropy -sum q log q and the
  variance of s under q, each [..., 1]. The logits s must be <= 0 with a 0 in every row that
  has a valid key (shifted by their maximum: g s then never loses digits to a large offset).
  Rows without a valid key give H = 0, Var = 0."""
  scaled = jnp.where(mask, jnp.exp(log_g) * logits, -jnp.inf)
  e = jnp.exp(scaled)  # 0 at masked keys
  total = jnp.sum(e, axis=-1, keepdims=True)
  q = e / jnp.where(total > 0, total, 1.0)
  s = jnp.where(mask, logits, 0.0)
  # -sum q log q with log q = g s - log(total)
  h = jnp.log(jnp.where(total > 0, total, 1.0)) - jnp.sum(
      q * jnp.where(mask, scaled, 0.0), axis=-1, keepdims=True)
  mean = jnp.sum(q * s, axis=-1, keepdims=True)
  return h, jnp.sum(q * jnp.square(s - mean), axis=-1, keepdims=True)


def shifted(logits, mask):
  """(logits minus their row's maximum over the mask, 0 elsewhere; the mask without the keys
  whose logit is not finite, such as log 0 of a zero probability). Softmax is blind to the
  shift, and g s then never loses digits to a large common offset."""
  logits = logits.astype(jnp.float32)
  mask = mask & jnp.isfinite(logits)
  top = jnp.max(jnp.where(mask, logits, -jnp.inf), axis=-1, keepdims=True)
  return jnp.where(mask, logits - jnp.where(jnp.isfinite(top), top, 0.0), 0.0), mask


def power_for_entropy(logits, mask, target, steps: int = STEPS):
  """log g [..., 1] with H(softmax(g logits)) = target over the mask's keys, per row.

  The search runs without gradients; one last Newton step is taken with them, so that the
  gradient is the implicit function's, dlog g/dx = (dH/dx) / (g^2 Var), and H stays at the
  target to first order whatever the logits do. A target outside (log #maxima, log n) is
  not reachable: g ends at the bracket's end.
  """
  logits, mask = shifted(logits, mask)
  target = jnp.asarray(target, jnp.float32)
  fixed = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(target)

  def newton(log_g, z, goal):
    """The Newton step in log g (dH/dlog g = -g^2 Var) and H(g) - goal; 0 where Var = 0."""
    h, var = entropy_and_variance(log_g, z, mask)
    slope = jnp.exp(2.0 * log_g) * var
    flat = slope <= 1e-30
    return jnp.where(flat, 0.0, (h - goal) / jnp.where(flat, 1.0, slope)), h - goal

  def body(_, state):
    log_g, low, high = state
    step, excess = newton(log_g, *fixed)
    # H falls with g: too much entropy means the root lies above
    low = jnp.where(excess > 0, log_g, low)
    high = jnp.where(excess > 0, high, log_g)
    moved = log_g + step
    inside = (moved > low) & (moved < high)
    return jnp.where(inside, moved, 0.5 * (low + high)), low, high

  shape = jnp.broadcast_shapes(logits.shape[:-1] + (1,), target.shape)
  start = (jnp.zeros(shape), jnp.full(shape, -LOG_G_BOUND), jnp.full(shape, LOG_G_BOUND))
  log_g = jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, start)[0])
  step, _ = newton(log_g, logits, target)
  return log_g + jnp.clip(step, -1.0, 1.0)  # clipped: a bounded step where g hit the bracket


def entropy_normalize(p, target, steps: int = STEPS):
  """The post's transform of distributions p [..., n] (rows summing to 1): p^g / sum p^g with
  the entropy `target` (nats) per row. Zero entries stay zero."""
  log_p, positive = shifted(jnp.log(p), p > 0)
  g = jnp.exp(power_for_entropy(log_p, positive, target, steps))
  return jax.nn.softmax(jnp.where(positive, g * log_p, -jnp.inf), axis=-1)


def attention_target(mask, fraction: float, train_length: int):
  """H* = fraction * log(min(n, L0)) [b, 1, q, 1], n the row's valid keys: the share of the
  uniform row's entropy chosen for rows up to the training length L0, and past it the entropy
  at L0, so a longer context attends as sharply as training did."""
  n = jnp.clip(num_valid_keys(mask).astype(jnp.float32), 1.0, float(train_length))
  return fraction * jnp.log(n)


def normalize_logits(logits, mask, cfg):
  """ScaleVariant.logits_transform: each row's logits times its g (shifted by the row's
  maximum first, which the softmax does not see)."""
  target = attention_target(mask, cfg.entropy_norm_fraction, cfg.rope_original_length)
  logits, valid = shifted(logits, mask)
  return logits * jnp.exp(power_for_entropy(logits, valid, target))


def _open_fraction(value, cfg):
  del cfg
  return None if 0.0 < value < 1.0 else "must be in (0, 1): a share of log n"


def _check(cfg) -> None:
  kernel = ATTENTIONS[cfg.attention]
  if not kernel.transforms_logits:
    able = "|".join(k.name for k in ATTENTIONS.values() if k.transforms_logits)
    raise ConfigError(f"attention={kernel.name} cannot apply scale=entropy_norm: it forms no "
                      f"[q, k] logits to normalise; use attention={able} or another scale")


def _build_check(cfg) -> None:
  require_original_length(cfg, "scale=entropy_norm")


# 0.7: the entropy that this codebase's char-level MLMs reached at their training length 64
# (2.93 nats of log 64 = 4.16 for scale=standard, 3.01 for logn; docs/results/mlm_extrapolation.md)
ENTROPY_NORM_FRACTION = Field(
    "entropy_norm_fraction", 0.7, "entropy_norm: each row's entropy is this share of "
    "log(min(n, L0)), n its keys, L0 the training length", _open_fraction, eval_time=True,
    bad=(0.0, 1.0))

VARIANT = ScaleVariant(
    name="entropy_norm", doc="each row's logits times g with H(softmax(g s)) = f log(min(n, "
    "L0)), on 1/sqrt(d)", fields=(ENTROPY_NORM_FRACTION, ORIGINAL_LENGTH), check=_check,
    build_check=_build_check, logits_transform=normalize_logits,
    factor=lambda n_keys, head_dim, cfg: standard(n_keys, head_dim))

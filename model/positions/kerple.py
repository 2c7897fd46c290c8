"""KERPLE, logarithmic variant (Chi, Fan, Ramadge and Rudnicky 2022): a learned distance kernel.

  b_ij = -r1_h log(1 + r2_h d_ij),   d_ij = |i - j| (bidirectional), i - j for keys j <= i
  (causal; keys on the right are masked anyway and get d = 0),

added after the scale, like ALiBi, with r1, r2 > 0 learned per head and per layer. Near the
diagonal the bias is ~ -r1 r2 d (a linear ALiBi-like penalty of slope r1 r2); far from it,
logarithmic, so distant keys are penalised ever more gently.

Positivity: r = softplus(raw) + R_MIN, with the raw values the parameters (`raw_r1`,
`raw_r2`). The paper clamps r1, r2 after each update instead; softplus keeps them positive
under any update without touching the optimizer, and R_MIN keeps them positive where softplus
underflows to 0 (raw below about -100).

Initialisation (our choice): r1 = 1 and r2 = the ALiBi slopes of the head count (reference
rule, model/positions/alibi.py), so training starts from ALiBi's penalty near the diagonal
(slope m_h), bending to a logarithm beyond distances of about 1/m_h.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.positions.alibi import alibi_slopes
from model.positions.base import RelativeTerms, key_offset
from model.variants import PositionVariant, unbounded

R_MIN = 1e-6


def positive(raw):
  """r = softplus(raw) + R_MIN > 0 for any raw."""
  return jax.nn.softplus(raw) + R_MIN


def raw_for(r):
  """The raw value whose positive() is r (r > R_MIN): softplus^-1(r - R_MIN)."""
  r = jnp.asarray(r, jnp.float32) - R_MIN
  return r + jnp.log(-jnp.expm1(-r))  # log(e^r - 1), stable for small and large r


def kerple_bias(q_pos, k_pos, r1, r2, causal: bool):
  """[1, H, q, k] float32 bias -r1 log(1 + r2 d) for [H] coefficients r1, r2."""
  offset = key_offset(q_pos, k_pos)
  dist = jnp.maximum(-offset, 0) if causal else jnp.abs(offset)
  d = dist.astype(jnp.float32)[None]
  return (-r1[:, None, None] * jnp.log1p(r2[:, None, None] * d))[None]


class Kerple(nn.Module):
  num_heads: int

  @nn.compact
  def __call__(self, q_pos, k_pos, causal: bool = False):
    h = self.num_heads
    raw_r1 = self.param("raw_r1", lambda key, shape: jnp.full(shape, raw_for(1.0)), (h,))
    raw_r2 = self.param("raw_r2", lambda key, shape: raw_for(alibi_slopes(shape[0])), (h,))
    bias = kerple_bias(q_pos, k_pos, positive(raw_r1), positive(raw_r2), causal)
    return RelativeTerms(bias=bias)


VARIANT = PositionVariant(
    name="kerple", doc="KERPLE log kernel -r1 log(1 + r2 |i - j|), r1, r2 > 0 learned per head",
    terms=lambda cfg: frozenset({"bias"}), max_length=unbounded,
    relative=lambda cfg: Kerple(num_heads=cfg.num_heads))

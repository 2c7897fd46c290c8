"""ALiBi (Press, Smith and Lewis 2022): a fixed linear distance penalty per head.

b_ij = -m_h |i - j| (bidirectional) or -m_h (i - j) for j <= i (causal), added after the
scale. No parameters and no length limit: the standard length-extrapolation peer.

Slopes (`model.alibi_slopes`):
  closed_form: m_h = 2^(-8h/H), h = 1..H, for every H (a geometric sequence to 2^-8);
  reference:   as the ALiBi reference code and BLOOM. For H a power of two this is the closed
               form; otherwise, with n = 2^floor(log2 H), the n slopes of n heads followed by
               every other slope of 2n heads, starting with the first, H - n of them. For 12
               heads: 2^-1 ... 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.positions.base import RelativeTerms, key_offset
from model.variants import Field, PositionVariant, one_of, unbounded

SLOPE_RULES = ("reference", "closed_form")


def closed_form_slopes(num_heads: int):
  """[H] slopes 2^(-8h/H), h = 1..H; for H = 8: 1/2, 1/4, ..., 1/256."""
  h = jnp.arange(1, num_heads + 1, dtype=jnp.float32)
  return 2.0 ** (-8.0 * h / num_heads)


def alibi_slopes(num_heads: int, rule: str = "reference"):
  """[H] float32 slopes under `rule` (see the module docstring)."""
  n = 1 << (num_heads.bit_length() - 1)  # the largest power of two <= H
  if rule == "closed_form" or n == num_heads:
    return closed_form_slopes(num_heads)
  return jnp.concatenate([closed_form_slopes(n), closed_form_slopes(2 * n)[0::2][:num_heads - n]])


def alibi_bias(q_pos, k_pos, num_heads: int, causal: bool, rule: str = "reference"):
  """[1, H, q, k] float32 bias."""
  offset = key_offset(q_pos, k_pos)
  # causal: only keys on the left are penalised; those on the right are masked anyway
  dist = jnp.maximum(-offset, 0) if causal else jnp.abs(offset)
  return (-alibi_slopes(num_heads, rule)[:, None, None] * dist.astype(jnp.float32))[None]


class Alibi(nn.Module):
  num_heads: int
  slopes: str = "reference"

  def __call__(self, q_pos, k_pos, causal: bool = False):
    return RelativeTerms(bias=alibi_bias(q_pos, k_pos, self.num_heads, causal, self.slopes))


SLOPES = Field("alibi_slopes", "reference", "slopes for a head count that is not a power of "
               "two: reference (ALiBi code, BLOOM) | closed_form (2^(-8h/H))",
               one_of(SLOPE_RULES), bad=("linear",))

VARIANT = PositionVariant(
    name="alibi", doc="a fixed penalty -m_h |i - j| per head, after the scale",
    fields=(SLOPES,), terms=lambda cfg: frozenset({"bias"}), max_length=unbounded,
    relative=lambda cfg: Alibi(num_heads=cfg.num_heads, slopes=cfg.alibi_slopes))

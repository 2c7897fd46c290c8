"""ALiBi (Press, Smith and Lewis 2022): a fixed linear distance penalty per head.

b_ij = -m_h |i - j| (bidirectional) or -m_h (i - j) for j <= i (causal), added after the
scale, with slopes m_h = 2^(-8h/H), h = 1..H (a geometric sequence from 2^(-8/H) to 2^-8).
No parameters and no length limit: the standard length-extrapolation peer.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.positions.base import RelativeTerms, key_offset
from model.variants import PositionVariant, unbounded


def alibi_slopes(num_heads: int):
  """[H] slopes 2^(-8h/H), h = 1..H; for H = 8: 1/2, 1/4, ..., 1/256."""
  h = jnp.arange(1, num_heads + 1, dtype=jnp.float32)
  return 2.0 ** (-8.0 * h / num_heads)


def alibi_bias(q_pos, k_pos, num_heads: int, causal: bool):
  """[1, H, q, k] float32 bias."""
  offset = key_offset(q_pos, k_pos)
  # causal: only keys on the left are penalised; those on the right are masked anyway
  dist = jnp.maximum(-offset, 0) if causal else jnp.abs(offset)
  return (-alibi_slopes(num_heads)[:, None, None] * dist.astype(jnp.float32))[None]


class Alibi(nn.Module):
  num_heads: int

  def __call__(self, q_pos, k_pos, causal: bool = False):
    return RelativeTerms(bias=alibi_bias(q_pos, k_pos, self.num_heads, causal))


VARIANT = PositionVariant(
    name="alibi", doc="a fixed penalty -m_h |i - j| per head, after the scale",
    terms=lambda cfg: frozenset({"bias"}), max_length=unbounded,
    relative=lambda cfg: Alibi(num_heads=cfg.num_heads))

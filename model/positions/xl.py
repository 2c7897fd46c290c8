"""Transformer-XL / XLNet relative attention (Dai et al. 2019; docs/techniques.md section 3).

  s_ij = q_i.k_j + q_i.W_R R_{i-j} + u.k_j + v.W_R R_{i-j}

R is the fixed sinusoidal encoding of the offset i - j (model width wide), W_R a learned
projection to every head, u and v learned per head (global content and position biases).
All terms sit before the scale, like q.k.

The position terms are computed once per distinct offset and gathered per pair. Positions are
taken to be consecutive (the encoder's 0..n-1, possibly shifted), so the offsets of a q x k
block are the nq + nk - 1 values (q_pos[0] - k_pos[0]) - nk + 1 ... (q_pos[0] - k_pos[0]) + nq - 1.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.positions.absolute import sinusoidal
from model.positions.base import RelativeTerms, per_pair
from model.variants import PositionVariant, unbounded
from utils.errors import ConfigError


class TransformerXL(nn.Module):
  width: int
  num_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, q_pos, k_pos, causal: bool = False):
    del causal
    h, d = self.num_heads, self.head_dim
    nq, nk = q_pos.shape[0], k_pos.shape[0]
    u = self.param("u", nn.initializers.normal(0.02), (h, d))
    v = self.param("v", nn.initializers.normal(0.02), (h, d))
    offsets = (q_pos[0] - k_pos[0]) + jnp.arange(-(nk - 1), nq)  # every i - j, ascending
    r = nn.DenseGeneral((h, d), use_bias=False, name="w_r")(sinusoidal(offsets, self.width))
    idx = jnp.arange(nq)[:, None] - jnp.arange(nk)[None, :] + (nk - 1)  # row of r for (i, j)

    def content_logits(q, k):
      # q_i.W_R R + v.W_R R = (q_i + v).W_R R: one product against the distinct offsets
      pos = jnp.einsum("bqhd,rhd->bhqr", q + v.astype(q.dtype), r.astype(q.dtype),
                       preferred_element_type=jnp.float32)
      content_bias = jnp.einsum("hd,bkhd->bhk", u.astype(k.dtype), k,
                                preferred_element_type=jnp.float32)
      return per_pair(pos, idx) + content_bias[:, :, None, :]

    return RelativeTerms(content_logits=content_logits)


def _even_width(cfg) -> None:
  if cfg.width % 2:
    raise ConfigError(f"position=xl needs an even model width (sinusoidal R), got {cfg.width}")


VARIANT = PositionVariant(
    name="xl", doc="Transformer-XL: sinusoidal R_{i-j} projected per head, global biases u, v",
    check=_even_width, terms=lambda cfg: frozenset({"content_logits"}), max_length=unbounded,
    relative=lambda cfg: TransformerXL(width=cfg.width, num_heads=cfg.num_heads,
                                       head_dim=cfg.head_dim))

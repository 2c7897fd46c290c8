"""DeBERTa's disentangled attention (He et al. 2021; docs/techniques.md section 3).

With delta = clip(i - j, -K, K) and learned relative vectors K^r, Q^r per layer and head:
  s_ij = q_i.k_j + q_i.K^r_delta + k_j.Q^r_delta      (content, content-to-position,
                                                       position-to-content)
scaled by 1/sqrt(3d) overall: the standard 1/sqrt(d) times logit_multiplier 1/sqrt(3), since
three terms of equal variance are summed.

Both relative terms are indexed by i - j, as in the public implementation (the paper writes
delta(j, i) for the position-to-content term; its code, and this file, use i - j for both).
The relative vectors are learned per layer directly rather than projected from a shared
embedding table: the same family of functions, without cross-layer sharing.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from model.positions.base import (RELATIVE_CLIP, RelativeTerms, clipped_index, key_offset,
                                  per_pair)
from model.variants import PositionVariant, unbounded


class Deberta(nn.Module):
  clip: int
  num_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, q_pos, k_pos, causal: bool = False):
    del causal
    shape = (2 * self.clip + 1, self.num_heads, self.head_dim)
    init = nn.initializers.normal(0.02)
    pos_key = self.param("position_key", init, shape)  # K^r
    pos_query = self.param("position_query", init, shape)  # Q^r
    idx = clipped_index(-key_offset(q_pos, k_pos), self.clip)  # i - j

    def content_logits(q, k):
      score = lambda x, table: jnp.einsum("bnhd,rhd->bhnr", x, table.astype(x.dtype),
                                          preferred_element_type=jnp.float32)
      c2p = per_pair(score(q, pos_key), idx)  # q_i . K^r_{i-j}
      p2c = per_pair(score(k, pos_query), idx, by_key=True)  # k_j . Q^r_{i-j}
      return c2p + p2c

    return RelativeTerms(content_logits=content_logits, logit_multiplier=1.0 / math.sqrt(3.0))


VARIANT = PositionVariant(
    name="deberta", doc="disentangled content-to-position and position-to-content terms",
    fields=(RELATIVE_CLIP,), terms=lambda cfg: frozenset({"content_logits", "logit_multiplier"}),
    max_length=unbounded,
    relative=lambda cfg: Deberta(clip=cfg.relative_clip, num_heads=cfg.num_heads,
                                 head_dim=cfg.head_dim))

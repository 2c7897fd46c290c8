"""Classic relative positions (Shaw, Uszkoreit and Vaswani 2018; docs/techniques.md section 3).

Learned vectors r^K, r^V indexed by the clipped offset clip(j - i, -K, K):
  s_ij = q_i . (k_j + r^K_ij)      (before the scale, like q.k)
  o_i  = sum_j a_ij (v_j + r^V_ij)
As in the paper, one table per layer is shared by all heads; beyond distance K every offset
shares the edge vector, which is what lets the model run at any length.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.positions.base import (RELATIVE_CLIP, RelativeTerms, clipped_index, key_offset,
                                  per_pair)
from model.variants import PositionVariant, unbounded


class Shaw(nn.Module):
  clip: int
  head_dim: int

  @nn.compact
  def __call__(self, q_pos, k_pos, causal: bool = False):
    del causal  # a causal mask already zeroes the probabilities of later keys
    size = 2 * self.clip + 1
    init = nn.initializers.normal(0.02)
    rel_k = self.param("key", init, (size, self.head_dim))
    rel_v = self.param("value", init, (size, self.head_dim))
    idx = clipped_index(key_offset(q_pos, k_pos), self.clip)  # j - i

    def content_logits(q, k):
      del k
      scores = jnp.einsum("bqhd,rd->bhqr", q, rel_k.astype(q.dtype),
                          preferred_element_type=jnp.float32)
      return per_pair(scores, idx)

    def value_term(probs):
      # pool each query's probabilities by clipped offset, then mix the 2K+1 value vectors
      rows = jnp.arange(idx.shape[0])[:, None]
      pooled = jnp.zeros(probs.shape[:-1] + (size,), probs.dtype).at[:, :, rows, idx].add(probs)
      return jnp.einsum("bhqr,rd->bqhd", pooled, rel_v.astype(probs.dtype))

    return RelativeTerms(content_logits=content_logits, value_term=value_term)


VARIANT = PositionVariant(
    name="shaw", doc="learned relative key and value vectors of the clipped offset j - i",
    fields=(RELATIVE_CLIP,), terms=lambda cfg: frozenset({"content_logits", "value_term"}),
    max_length=unbounded,
    relative=lambda cfg: Shaw(clip=cfg.relative_clip, head_dim=cfg.head_dim))

"""What a position encoding may contribute to the model.

A position encoding has up to two parts, each optional:

* an absolute part, applied once to the token embeddings (learned, sinusoidal);
* a relative part, built inside every attention layer, that returns `RelativeTerms`:
  a rotation of q and k (RoPE family), a content-dependent term added to q.k before the scale
  (Shaw, Transformer-XL, DeBERTa), a bias added after the scale (T5, ALiBi), a term added
  to the attention output (Shaw's value vectors), or the q.k logits themselves when they
  cannot be written as one rotation (ReRoPE: two rotations, selected per pair).

Attention kernels consume `RelativeTerms`; a kernel that cannot honour a term refuses it at
start-up (see model/attention/__init__.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

Array = Any


@dataclasses.dataclass(frozen=True)
class RelativeTerms:
  rotate: Optional[Callable[[Array, Array], Array]] = None  # (x[b,n,h,d], pos[n]) -> x
  # (q, k) -> [b,h,q,k] float32 replacing q.k (before content_logits and the scale); gets the
  # unrotated q, k
  qk_logits: Optional[Callable[[Array, Array], Array]] = None
  content_logits: Optional[Callable[[Array, Array], Array]] = None  # (q, k) -> [b,h,q,k]
  bias: Optional[Array] = None  # [1|b, h, q, k], added after the scale
  value_term: Optional[Callable[[Array], Array]] = None  # probs[b,h,q,k] -> [b,q,h,d]
  logit_multiplier: float = 1.0  # extra factor on the scaled logits (DeBERTa: 1/sqrt(3))


NO_TERMS = RelativeTerms()


@dataclasses.dataclass(frozen=True)
class PositionSpec:
  """Registry entry. Factories take the model config and return a linen module or None."""
  absolute: Optional[Callable[[Any], Any]] = None  # module(x, positions) -> x
  relative: Optional[Callable[[Any], Any]] = None  # module(q_pos, k_pos, causal) -> RelativeTerms
  max_length: Callable[[Any], Optional[int]] = lambda cfg: None  # longest usable sequence


def key_offset(q_pos, k_pos):
  """[q, k] int: key position minus query position (j - i), > 0 for keys to the right."""
  return k_pos[None, :] - q_pos[:, None]


def clipped_index(offset, clip: int):
  """Index into a table of 2K+1 relative vectors: clip(offset, -K, K) + K."""
  return jnp.clip(offset, -clip, clip) + clip


def per_pair(scores, idx, by_key: bool = False):
  """Pick one relative score per (query, key) pair.

  scores[b, h, n, R] scores each query (or each key, by_key) against R relative-position
  vectors; idx[q, k] says which of the R applies to pair (i, j). Scoring the R vectors first
  and gathering costs O(n R d + n^2) instead of materialising an [n, n, d] tensor.
  """
  nq, nk = idx.shape
  rows = jnp.arange(nk)[None, :] if by_key else jnp.arange(nq)[:, None]
  return scores[:, :, rows, idx]

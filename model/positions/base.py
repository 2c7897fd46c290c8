"""What a position encoding may contribute to the model.

A position encoding has up to two parts, each optional:

* an absolute part, applied once to the token embeddings (learned, sinusoidal);
* a relative part, built inside every attention layer, that returns `RelativeTerms`:
  a rotation of q and k (RoPE family), a content-dependent term added to q.k before the scale
  (Shaw, Transformer-XL, DeBERTa), a bias added after the scale (T5, ALiBi), a term added
  to the attention output (Shaw's value vectors), or the q.k logits themselves when they
  cannot be written as one rotation (ReRoPE: two rotations, selected per pair).

Attention kernels consume `RelativeTerms`. Each encoding declares which fields it returns
(PositionVariant.terms, model/variants.py), so that a kernel that cannot honour a term refuses
it at start-up, and the attention layer refuses a returned term that was not declared.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

from model.variants import DeclarationError, Field, at_least

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


TERM_NAMES = tuple(f.name for f in dataclasses.fields(RelativeTerms))


def used_terms(terms: RelativeTerms) -> frozenset:
  """The fields of `terms` that differ from NO_TERMS: what the encoding contributes."""
  def used(name):
    value, default = getattr(terms, name), getattr(NO_TERMS, name)
    return value is not None if default is None else value != default
  return frozenset(name for name in TERM_NAMES if used(name))


def term_arrays(terms: RelativeTerms) -> dict:
  """The used fields of `terms` as {name: array}: what may cross nn.remat into the blocks
  when one module serves every layer (PositionVariant.shared). RelativeTerms(**d) rebuilds."""
  out = {name: getattr(terms, name) for name in sorted(used_terms(terms))}
  for name, value in out.items():
    if callable(value) or not hasattr(value, "shape"):
      raise DeclarationError(f"a shared position module returned RelativeTerms.{name}, which "
                             "is not an array; only array terms (bias) can be shared")
  return out


# shaw and deberta: one clip distance K for their tables of 2K+1 relative vectors
RELATIVE_CLIP = Field("relative_clip", 64, "shaw, deberta: relative distances clipped to "
                      "[-K, K] (tables of 2K+1 vectors)", at_least(1), bad=(0,))


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

"""What a position encoding may contribute to the model.

A position encoding has up to two parts, each optional:

* an absolute part, applied once to the token embeddings (learned, sinusoidal);
* a relative part, built inside every attention layer, that returns `RelativeTerms`:
  a rotation of q and k (RoPE family), a content-dependent term added to q.k before the scale
  (Shaw, Transformer-XL, DeBERTa), a bias added after the scale (T5, ALiBi), and a term added
  to the attention output (Shaw's value vectors).

Attention kernels consume `RelativeTerms`; a kernel that cannot honour a term refuses it at
start-up (see model/attention/__init__.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

Array = Any


@dataclasses.dataclass(frozen=True)
class RelativeTerms:
  rotate: Optional[Callable[[Array, Array], Array]] = None  # (x[b,n,h,d], pos[n]) -> x
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

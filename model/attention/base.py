"""What every attention kernel receives. (What a kernel supports is its KernelVariant,
declared in its own file; model/variants.py.)"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from model.positions.base import RelativeTerms

Array = Any

# masks a kernel may honour beyond key padding; "any" = an arbitrary [b, 1, q, k] mask (UniLM
# segments, spans). O(n) kernels never see the [q, k] matrix, so they cannot apply one.
ALL_MASKS = frozenset({"causal", "window", "any"})


@dataclasses.dataclass(frozen=True)
class AttentionInputs:
  """Everything but q, k, v. Shapes: q, k, v are [b, n, h, d]."""
  mask: Array  # [b, 1, q, k] bool, True = may attend
  scale: Array  # [b, 1, q, 1] logit factor from model/scales/
  terms: RelativeTerms  # contributions of the position encoding
  q_pos: Array  # [q] int positions
  k_pos: Array  # [k]
  causal: bool = False
  dropout: Callable[[Array], Array] = lambda p: p  # applied to attention probabilities
  # sees the attention probabilities [b, h, q, k] before dropout (kernels that form them call
  # it); the layer uses it to record their entropy for evaluation/entropy.py
  observe: Callable[[Array], None] = lambda p: None
  x: Optional[Array] = None  # the layer input [b, n, width] (Synthesizer predicts logits from it)
  # the scale's function of the full logits [b, h, q, k] (ScaleVariant.logits_transform), for
  # the kernels that declare transforms_logits; identity for every other scale
  logits_transform: Callable[[Array], Array] = lambda logits: logits

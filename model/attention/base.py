"""What every attention kernel receives, and the registry entry that describes a kernel."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from model.positions.base import RelativeTerms
from utils.errors import ConfigError

Array = Any


@dataclasses.dataclass(frozen=True)
class AttentionInputs:
  """Everything but q, k, v. Shapes: q, k, v are [b, n, h, d]."""
  mask: Array  # [b, 1, q, k] bool, True = may attend
  scale: Array  # [b, 1, q, 1] logit factor from model/scale.py
  terms: RelativeTerms  # contributions of the position encoding
  q_pos: Array  # [q] int positions
  k_pos: Array  # [k]
  causal: bool = False
  dropout: Callable[[Array], Array] = lambda p: p  # applied to attention probabilities
  # sees the attention probabilities [b, h, q, k] before dropout (kernels that form them call
  # it); the layer uses it to record their entropy for evaluation/entropy.py
  observe: Callable[[Array], None] = lambda p: None
  x: Optional[Array] = None  # the layer input [b, n, width] (Synthesizer predicts logits from it)


@dataclasses.dataclass(frozen=True)
class KernelSpec:
  """Registry entry: the kernel function plus what it supports."""
  fn: Callable[..., Array]  # fn(q, k, v, inputs, cfg) -> [b, q, h, d]
  # which RelativeTerms fields the kernel honours; others are refused at start-up
  supports: frozenset = frozenset({"rotate", "qk_logits", "content_logits", "bias",
                                   "value_term", "logit_multiplier"})
  max_length: Callable[[Any], Optional[int]] = lambda cfg: None
  module: Optional[Callable[[Any], Any]] = None  # kernels with parameters: cfg -> linen module
  name: str = ""
  # Masks honoured beyond key padding. O(n) kernels never see the [q, k] matrix, so they
  # cannot apply an arbitrary mask; "any" = any [b, 1, q, k] mask (UniLM segments, spans).
  masks: frozenset = frozenset({"causal", "window", "any"})
  validate: Optional[Callable[[Any], None]] = None  # kernel-specific config checks

  def check(self, cfg) -> None:
    """Refuse position encodings whose terms this kernel cannot apply."""
    needs = position_terms(cfg)
    missing = sorted(needs - self.supports)
    if missing:
      option = f" with rope_scaling={cfg.rope_scaling}" if cfg.position == "rope" else ""
      raise ConfigError(
          f"attention={self.name} cannot apply position={cfg.position}{option} (needs "
          f"{missing}); use attention=softmax or a position encoding among those it supports")
    if cfg.causal:
      self.require_mask("causal")
    if cfg.window > 0:
      self.require_mask("window")
    if self.validate is not None:
      self.validate(cfg)

  def require_mask(self, kind: str) -> None:
    if kind not in self.masks:
      what = {"causal": "a causal mask (model.causal)", "window": "a window mask (model.window)",
              "any": "an arbitrary [q, k] mask (UniLM segments)"}[kind]
      also = " and ".join(sorted(self.masks)) or "nothing else"
      raise ConfigError(f"attention={self.name} cannot apply {what}: it honours key padding "
                        f"and {also}; use attention=softmax")


# Which terms each relative position encoding produces (absolute ones produce none).
POSITION_TERMS: dict = {
    "rope": frozenset({"rotate"}),
    "shaw": frozenset({"content_logits", "value_term"}),
    "xl": frozenset({"content_logits"}),
    "t5": frozenset({"bias"}),
    "deberta": frozenset({"content_logits", "logit_multiplier"}),
    "alibi": frozenset({"bias"}),
}


def position_terms(cfg) -> frozenset:
  """The RelativeTerms fields cfg's position encoding produces, options included."""
  if cfg.position == "rope" and cfg.rope_scaling == "rerope":
    return frozenset({"qk_logits"})  # two rotations selected per pair: not one rotation
  return POSITION_TERMS.get(cfg.position, frozenset())

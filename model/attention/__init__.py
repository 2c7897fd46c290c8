"""Registry of attention kernels: one entry per `model.attention` name, one file per kernel."""
from __future__ import annotations

from utils.errors import ConfigError

from model.attention.base import AttentionInputs, KernelSpec
from model.attention.softmax import masked_softmax, softmax_attention

ATTENTIONS = {
    "softmax": KernelSpec(fn=softmax_attention, name="softmax"),
}


def get_attention(name: str) -> KernelSpec:
  if name not in ATTENTIONS:
    raise ConfigError(f"unknown attention {name!r}; valid names: {sorted(ATTENTIONS)}")
  return ATTENTIONS[name]


__all__ = ["ATTENTIONS", "get_attention", "AttentionInputs", "KernelSpec", "masked_softmax"]

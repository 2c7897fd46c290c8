"""Attention kernels (`model.attention`), one file each, registered by their declarations.

Each module of this package that declares a `VARIANT` (or `VARIANTS`) of KernelVariant
(model/variants.py) is a kernel: its math, its config fields, the position terms and masks it
honours, and whether it forms attention probabilities all sit in that file.
"""
from __future__ import annotations

from model.attention.base import AttentionInputs
from model.variants import KernelVariant, Registry

ATTENTIONS = Registry(__name__, KernelVariant, "attention")


def get_attention(name: str) -> KernelVariant:
  return ATTENTIONS.lookup(name)


__all__ = ["ATTENTIONS", "get_attention", "AttentionInputs", "KernelVariant"]

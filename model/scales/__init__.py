"""Attention logit scales (`model.scale`; docs/techniques.md section 1), one file each.

A scale maps (number of valid keys per query, head dim) to the factor lambda that multiplies
q.k. Each module here declares a ScaleVariant (model/variants.py) next to its pure function.
"""
from __future__ import annotations

from model.variants import Registry, ScaleVariant

SCALES = Registry(__name__, ScaleVariant, "scale")


def get_scale(name: str) -> ScaleVariant:
  return SCALES.lookup(name)


__all__ = ["SCALES", "get_scale", "ScaleVariant"]

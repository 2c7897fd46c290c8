"""Position encodings (`model.position`), one file each, registered by their declarations.

Each module of this package that declares a `VARIANT` (or `VARIANTS`) of PositionVariant
(model/variants.py) is an encoding: its math, its config fields, its length bound and the
RelativeTerms it produces all sit in that file. Adding an encoding is adding a file.
"""
from __future__ import annotations

from model.positions.base import NO_TERMS, RelativeTerms, used_terms
from model.variants import DeclarationError, LengthBoundError, PositionVariant, Registry

POSITIONS = Registry(__name__, PositionVariant, "position")


def get_position(name: str) -> PositionVariant:
  return POSITIONS.lookup(name)


def checked_terms(variant: PositionVariant, terms: RelativeTerms, cfg) -> RelativeTerms:
  """`terms`, after making sure it uses only the fields `variant` declares under cfg.

  Kernels refuse an encoding by its declared terms (model/config.py); a term returned but not
  declared would reach a kernel that silently drops it. Runs at trace time, so it costs
  nothing per step.
  """
  undeclared = sorted(used_terms(terms) - variant.terms(cfg))
  if undeclared:
    raise DeclarationError(
        f"position={variant.name} returned RelativeTerms fields {undeclared} that its "
        f"declaration does not name (terms(cfg) = {sorted(variant.terms(cfg))}); add them to "
        f"the terms of its PositionVariant")
  return terms


__all__ = ["POSITIONS", "get_position", "checked_terms", "PositionVariant", "RelativeTerms",
           "NO_TERMS", "LengthBoundError"]

"""No position information (NoPE): the model sees a bag of tokens, except through a causal mask."""
from __future__ import annotations

from model.variants import PositionVariant, no_terms, unbounded

VARIANT = PositionVariant(name="none", doc="no position encoding (NoPE)", terms=no_terms,
                          max_length=unbounded)

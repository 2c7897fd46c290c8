"""Registry of position encodings: one entry per `model.position` name.

Each encoding lives in its own file; this table only says which parts it has. To add one,
write its module(s) and add a PositionSpec here.
"""
from __future__ import annotations

from utils.errors import ConfigError

from model.positions.absolute import LearnedPositions, LengthBoundError, SinusoidalPositions
from model.positions.base import NO_TERMS, PositionSpec, RelativeTerms
from model.positions.rope import Rope

POSITIONS = {
    "none": PositionSpec(),
    "learned": PositionSpec(
        absolute=lambda cfg: LearnedPositions(max_len=cfg.max_len, width=cfg.width),
        max_length=lambda cfg: cfg.max_len),
    "sinusoidal": PositionSpec(
        absolute=lambda cfg: SinusoidalPositions(width=cfg.width, mode=cfg.sinusoidal_mode)),
    "rope": PositionSpec(
        relative=lambda cfg: Rope(base=cfg.rope_base, layout=cfg.rope_layout)),
}


def get_position(name: str) -> PositionSpec:
  if name not in POSITIONS:
    raise ConfigError(f"unknown position {name!r}; valid names: {sorted(POSITIONS)}")
  return POSITIONS[name]


__all__ = ["POSITIONS", "get_position", "PositionSpec", "RelativeTerms", "NO_TERMS",
           "LengthBoundError"]

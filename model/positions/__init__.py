"""Registry of position encodings: one entry per `model.position` name.

Each encoding lives in its own file; this table only says which parts it has. To add one,
write its module(s) and add a PositionSpec here.
"""
from __future__ import annotations

from utils.errors import ConfigError

from model.positions.absolute import LearnedPositions, LengthBoundError, SinusoidalPositions
from model.positions.alibi import Alibi
from model.positions.base import NO_TERMS, PositionSpec, RelativeTerms
from model.positions.deberta import Deberta
from model.positions.rope import SCALINGS, Rope
from model.positions.shaw import Shaw
from model.positions.t5 import T5Bias
from model.positions.xl import TransformerXL

POSITIONS = {
    "none": PositionSpec(),
    "learned": PositionSpec(
        absolute=lambda cfg: LearnedPositions(max_len=cfg.max_len, width=cfg.width),
        max_length=lambda cfg: cfg.max_len),
    "sinusoidal": PositionSpec(
        absolute=lambda cfg: SinusoidalPositions(width=cfg.width, mode=cfg.sinusoidal_mode)),
    "rope": PositionSpec(
        relative=lambda cfg: Rope(base=cfg.rope_base, layout=cfg.rope_layout,
                                  scaling=cfg.rope_scaling, factor=cfg.rope_scaling_factor,
                                  window=cfg.rerope_window)),
    "shaw": PositionSpec(
        relative=lambda cfg: Shaw(clip=cfg.relative_clip, head_dim=cfg.head_dim)),
    "xl": PositionSpec(
        relative=lambda cfg: TransformerXL(width=cfg.width, num_heads=cfg.num_heads,
                                           head_dim=cfg.head_dim)),
    "t5": PositionSpec(
        relative=lambda cfg: T5Bias(num_heads=cfg.num_heads, num_buckets=cfg.t5_num_buckets,
                                    max_distance=cfg.t5_max_distance, width=cfg.width)),
    "deberta": PositionSpec(
        relative=lambda cfg: Deberta(clip=cfg.relative_clip, num_heads=cfg.num_heads,
                                     head_dim=cfg.head_dim)),
    "alibi": PositionSpec(relative=lambda cfg: Alibi(num_heads=cfg.num_heads)),
}


def get_position(name: str) -> PositionSpec:
  if name not in POSITIONS:
    raise ConfigError(f"unknown position {name!r}; valid names: {sorted(POSITIONS)}")
  return POSITIONS[name]


def check_position_config(cfg) -> None:
  """Refuse bad values of the position fields of a ModelConfig (called by its validate)."""
  get_position(cfg.position)
  if cfg.rope_scaling not in SCALINGS:
    raise ConfigError(f"unknown rope_scaling {cfg.rope_scaling!r}; valid names: "
                      f"{sorted(SCALINGS)}")
  if cfg.rope_scaling != "none" and cfg.position != "rope":
    raise ConfigError(f"rope_scaling={cfg.rope_scaling} applies to position=rope only, not "
                      f"position={cfg.position}; use rope_scaling=none")
  if cfg.rope_scaling_factor <= 0:
    raise ConfigError(f"model.rope_scaling_factor must be positive, got "
                      f"{cfg.rope_scaling_factor}")
  if cfg.position == "rope" and cfg.rope_scaling == "ntk" and cfg.head_dim <= 2:
    raise ConfigError("rope_scaling=ntk needs a head dimension above 2 (base^(d/(d-2)))")
  if cfg.rerope_window < 1:
    raise ConfigError(f"model.rerope_window must be >= 1, got {cfg.rerope_window}")
  if cfg.relative_clip < 1:
    raise ConfigError(f"model.relative_clip must be >= 1, got {cfg.relative_clip}")
  if cfg.t5_num_buckets < 4 or cfg.t5_num_buckets % 2:
    raise ConfigError(f"model.t5_num_buckets must be even and >= 4, got {cfg.t5_num_buckets}")
  # the log-spaced buckets run from the last exact distance to max_distance
  exact = cfg.t5_num_buckets // 2 if cfg.causal else cfg.t5_num_buckets // 4
  if cfg.t5_max_distance <= exact:
    raise ConfigError(f"model.t5_max_distance must exceed the {exact} exact distances of "
                      f"{cfg.t5_num_buckets} buckets, got {cfg.t5_max_distance}")
  if cfg.position == "xl" and cfg.width % 2:
    raise ConfigError(f"position=xl needs an even model width (sinusoidal R), got {cfg.width}")


__all__ = ["POSITIONS", "get_position", "check_position_config", "PositionSpec",
           "RelativeTerms", "NO_TERMS", "LengthBoundError"]

"""The model's hyperparameters as a frozen, hashable dataclass (built from config.model).

Validation lives here so that a bad value is refused before anything is compiled.
"""
from __future__ import annotations

from utils.errors import ConfigError

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  width: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  dropout: float = 0.1
  attention_dropout: float = 0.0
  # position encoding (model/positions)
  position: str = "rope"
  max_len: int = 512  # table size of position=learned (and other length-bound variants)
  rope_base: float = 10000.0
  rope_layout: str = "interleaved"
  sinusoidal_mode: str = "add"
  relative_clip: int = 64  # shaw, deberta: relative distances clipped to [-K, K]
  t5_num_buckets: int = 32
  t5_max_distance: int = 128
  rope_scaling: str = "none"  # RoPE extrapolation: none | pi | ntk | rerope
  rope_scaling_factor: float = 1.0  # pi: positions / factor; ntk: base scaled for factor
  rerope_window: int = 64  # rerope: exact relative positions inside the window, clamped beyond
  # attention (model/attention, model/scale.py)
  attention: str = "softmax"
  scale: str = "logn"
  logn_n0: int = 512
  logn_floor: int = 16
  causal: bool = False
  window: int = 0  # sliding-window mask: keys with |i - j| < window (0: no window)
  performer_features: int = 64
  performer_redraw: bool = False  # draw new random features every training step
  nystrom_landmarks: int = 32
  nystrom_iterations: int = 6
  synthesizer_rank: int = 8  # synthesizer_factorized: rank of the learned logit factors
  # blocks (model/encoder.py, model/activations.py)
  norm: str = "post"
  activation: str = "gelu"
  remat: bool = False
  dtype: str = "float32"  # compute dtype; parameters stay float32

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ConfigError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
    cfg = cls(**dict(d))
    cfg.validate()
    return cfg

  def validate(self) -> None:
    # Imported here: the registries import modules that import this file.
    from model.activations import get_activation
    from model.attention import get_attention
    from model.encoder import NORMS
    from model.positions import check_position_config
    from model.scale import get_scale

    if self.vocab_size <= 0:
      raise ConfigError(f"model.vocab_size must be positive, got {self.vocab_size}")
    if self.width % self.num_heads:
      raise ConfigError(f"model.num_heads={self.num_heads} does not divide "
                       f"model.width={self.width}; pick a divisor of the width")
    if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.attention_dropout < 1.0:
      raise ConfigError("model.dropout and model.attention_dropout must be in [0, 1)")
    check_position_config(self)
    get_attention(self.attention).check(self)
    get_scale(self.scale)
    get_activation(self.activation)
    if self.norm not in NORMS:
      raise ConfigError(f"unknown norm {self.norm!r}; valid names: {sorted(NORMS)}")
    if self.position == "rope" and self.head_dim % 2:
      raise ConfigError(f"position=rope needs an even head dimension, got {self.head_dim}")
    if self.rope_layout not in ("interleaved", "half"):
      raise ConfigError(f"unknown rope_layout {self.rope_layout!r}; valid names: "
                       "['half', 'interleaved']")
    if self.sinusoidal_mode not in ("add", "mul"):
      raise ConfigError(f"unknown sinusoidal_mode {self.sinusoidal_mode!r}; valid names: "
                       "['add', 'mul']")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

  def max_length(self):
    """Longest sequence this model can encode, or None if unbounded."""
    from model.attention import get_attention
    from model.positions import get_position
    bounds = [b for b in (get_position(self.position).max_length(self),
                          get_attention(self.attention).max_length(self)) if b is not None]
    return min(bounds) if bounds else None

"""Absolute position encodings added to the token embeddings (docs/techniques.md section 3).

They act at the embedding width (model.embedding_size when set), before any projection to
the model width.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.variants import Field, LengthBoundError, PositionVariant, no_terms, one_of, unbounded
from utils.errors import ConfigError

SINUSOIDAL_MODES = ("add", "mul")


def sinusoidal(positions, width: int):
  """p[k, 2i] = sin(k / 10000^(2i/D)), p[k, 2i+1] = cos(k / 10000^(2i/D)); any positions."""
  if width % 2:
    raise ConfigError(f"sinusoidal positions need an even width, got {width}")
  i = jnp.arange(0, width, 2, dtype=jnp.float32)
  ang = positions.astype(jnp.float32)[..., None] / jnp.power(10000.0, i / width)
  # interleave sin/cos so that channel 2i is sin and 2i+1 is cos
  return jnp.stack([jnp.sin(ang), jnp.cos(ang)], axis=-1).reshape(*ang.shape[:-1], width)


class LearnedPositions(nn.Module):
  """A table of max_len vectors; cannot run past max_len (a clear error, not garbage)."""
  max_len: int
  width: int

  @nn.compact
  def __call__(self, x, positions):
    table = self.param("embedding", nn.initializers.normal(0.02), (self.max_len, self.width))
    n = x.shape[-2]
    if n > self.max_len:
      raise LengthBoundError(
          f"position=learned has a table of {self.max_len} positions and cannot encode a "
          f"sequence of length {n}; evaluate at lengths <= {self.max_len} or train with a "
          f"larger model.max_len")
    return x + jnp.take(table, positions, axis=0).astype(x.dtype)


class SinusoidalPositions(nn.Module):
  """Fixed sinusoidal table; mode 'add' (default) or 'mul' (multiplied into the embedding)."""
  width: int
  mode: str = "add"

  @nn.compact
  def __call__(self, x, positions):
    p = sinusoidal(positions, self.width).astype(x.dtype)
    if self.mode == "add":
      return x + p
    if self.mode == "mul":
      return x * p
    raise ConfigError(f"unknown sinusoidal_mode {self.mode!r}; valid names: "
                      f"{list(SINUSOIDAL_MODES)}")


def _even_width(cfg) -> None:
  if cfg.embed_width % 2:
    raise ConfigError(f"position=sinusoidal needs an even embedding width (sin/cos pairs), "
                      f"got {cfg.embed_width} (model.width, or model.embedding_size if set)")


SINUSOIDAL_MODE = Field("sinusoidal_mode", "add", "sinusoidal: add the table to the "
                        "embeddings, or multiply them by it", one_of(SINUSOIDAL_MODES),
                        bad=("concat",))

VARIANTS = [
    # the table size is the core field model.max_len (synthesizers share it)
    PositionVariant(
        name="learned", doc="a learned table of model.max_len vectors added to the embeddings",
        terms=no_terms, max_length=lambda cfg: cfg.max_len,
        absolute=lambda cfg: LearnedPositions(max_len=cfg.max_len, width=cfg.embed_width)),
    PositionVariant(
        name="sinusoidal", doc="the fixed sin/cos table of Vaswani et al., added or multiplied",
        fields=(SINUSOIDAL_MODE,), check=_even_width, terms=no_terms, max_length=unbounded,
        absolute=lambda cfg: SinusoidalPositions(width=cfg.embed_width,
                                                 mode=cfg.sinusoidal_mode)),
]

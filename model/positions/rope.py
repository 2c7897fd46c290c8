"""Rotary position embedding (RoPE; REFERENCE.md section 3).

Each pair of features of q and k is rotated by angle m * theta_t with
theta_t = base^(-2t/d), so (R_m q).(R_n k) = q.(R_{n-m} k): logits depend on m - n only.

Two pair layouts, not interchangeable when loading weights:
  interleaved: pairs (x0, x1), (x2, x3), ...        (RoFormer, bert4keras; default)
  half:        pairs (x_t, x_{t + d/2})             (GPT-NeoX / LLaMA)
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from model.positions.base import RelativeTerms
from utils.errors import ConfigError

LAYOUTS = ("interleaved", "half")


def rope_angles(positions, head_dim: int, base: float = 10000.0):
  """[n] positions -> [n, d/2] angles m * theta_t (float32 for accuracy at long lengths)."""
  if head_dim % 2:
    raise ConfigError(f"RoPE needs an even head dimension, got {head_dim}")
  inv_freq = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  return positions.astype(jnp.float32)[..., None] * inv_freq


def apply_rope(x, positions, *, base: float = 10000.0, layout: str = "interleaved"):
  """Rotate x[..., n, h, d] by the angles of positions[n] (or [b, n])."""
  d = x.shape[-1]
  ang = rope_angles(positions, d, base)[..., None, :]  # [.., n, 1, d/2]
  cos, sin = jnp.cos(ang), jnp.sin(ang)
  xf = x.astype(jnp.float32)
  if layout == "interleaved":
    x1, x2 = xf[..., 0::2], xf[..., 1::2]
    out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).reshape(xf.shape)
  elif layout == "half":
    x1, x2 = xf[..., : d // 2], xf[..., d // 2:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  else:
    raise ConfigError(f"unknown rope_layout {layout!r}; valid names: {list(LAYOUTS)}")
  return out.astype(x.dtype)


class Rope(nn.Module):
  base: float = 10000.0
  layout: str = "interleaved"

  def __call__(self, q_pos, k_pos, causal: bool = False):
    del k_pos, causal  # q and k are rotated by their own positions inside the kernel
    return RelativeTerms(rotate=functools.partial(apply_rope, base=self.base, layout=self.layout))

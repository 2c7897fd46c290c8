"""The standard attention scale 1/sqrt(d) (docs/techniques.md section 1)."""
from __future__ import annotations

import math

import jax.numpy as jnp

from model.variants import ScaleVariant


def standard(n_keys, head_dim: int, **_):
  """1/sqrt(d): keeps q.k at unit variance for unit-variance q, k."""
  return jnp.full_like(n_keys, 1.0 / math.sqrt(head_dim), dtype=jnp.float32)


VARIANT = ScaleVariant(name="standard", doc="1/sqrt(d)",
                       factor=lambda n_keys, head_dim, cfg: standard(n_keys, head_dim))

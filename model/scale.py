"""Attention logit scales (REFERENCE.md section 1).

A scale maps (number of valid keys per query, head dim) to the factor lambda that multiplies
q.k. Pure functions so they can be checked without a module.
"""
from __future__ import annotations

from utils.errors import ConfigError

import math

import jax.numpy as jnp


def standard(n_keys, head_dim: int, **_):
  """1/sqrt(d): keeps q.k at unit variance for unit-variance q, k."""
  return jnp.full_like(n_keys, 1.0 / math.sqrt(head_dim), dtype=jnp.float32)


def logn(n_keys, head_dim: int, n0: int = 512, floor: int = 16, **_):
  """Entropy-invariant scale log(n)/log(n0)/sqrt(d).

  n is the number of keys the query can attend to, floored so that very short (or fully
  padded) rows do not get a vanishing or negative scale. At n == n0 this is exactly the
  standard scale: the ratio is computed as log(n)/log(n0) in float32 and equals 1.0.
  """
  n = jnp.maximum(n_keys.astype(jnp.float32), float(floor))
  ratio = jnp.log(n) / jnp.float32(math.log(n0))
  ratio = jnp.where(n == n0, 1.0, ratio)  # exact, not 1 +- 1 ulp
  return ratio / math.sqrt(head_dim)


SCALES = {
    "standard": standard,
    "logn": logn,
}


def get_scale(name: str):
  if name not in SCALES:
    raise ConfigError(f"unknown scale {name!r}; valid names: {sorted(SCALES)}")
  return SCALES[name]

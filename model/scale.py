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


def logn_causal(n_keys, head_dim: int, n0: int = 512, **_):
  """max(1, log(n)/log(n0)) / sqrt(d): log-n that only ever raises the scale.

  n is again the number of keys the query may attend to; under a causal mask that is i + 1
  for query i, so this is the per-position form used by causal LMs (log(i+1)/log(n0) past
  the training length n0, standard before it). In a bidirectional model it is the same
  formula on the row's length. Up to n0 it is exactly the standard scale.
  """
  n = jnp.maximum(n_keys.astype(jnp.float32), 1.0)
  ratio = jnp.maximum(jnp.log(n) / jnp.float32(math.log(n0)), 1.0)
  ratio = jnp.where(n <= n0, 1.0, ratio)  # exact, not 1 +- 1 ulp
  return standard(n_keys, head_dim) * ratio


def unscaled(n_keys, head_dim: int, **_):
  """lambda = 1 (T5): the 1/sqrt(d) moves into the query projection's initialisation."""
  return jnp.ones_like(n_keys, dtype=jnp.float32)


SCALES = {
    "standard": standard,
    "logn": logn,
    "logn_causal": logn_causal,
    "none": unscaled,
}

# Scales that need a matching query initialisation: name -> std(width, head_dim).
# T5 draws W_q with std 1/sqrt(width * d), i.e. the default 1/sqrt(width) times 1/sqrt(d),
# so q.k starts with the same variance as q.k/sqrt(d) under the standard scale.
QUERY_INIT_STD = {
    "none": lambda width, head_dim: (width * head_dim) ** -0.5,
}


def get_scale(name: str):
  if name not in SCALES:
    raise ConfigError(f"unknown scale {name!r}; valid names: {sorted(SCALES)}")
  return SCALES[name]

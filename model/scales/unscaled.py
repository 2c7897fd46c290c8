"""No logit scale (T5; docs/techniques.md section 1), with the query initialisation it needs."""
from __future__ import annotations

import jax.numpy as jnp

from model.variants import ScaleVariant


def unscaled(n_keys, head_dim: int, **_):
  """lambda = 1 (T5): the 1/sqrt(d) moves into the query projection's initialisation."""
  return jnp.ones_like(n_keys, dtype=jnp.float32)


def t5_query_init_std(width: int, head_dim: int) -> float:
  """T5 draws W_q with std 1/sqrt(width * d), i.e. the default 1/sqrt(width) times 1/sqrt(d),
  so q.k starts with the same variance as q.k/sqrt(d) under the standard scale."""
  return (width * head_dim) ** -0.5


VARIANT = ScaleVariant(name="none", doc="lambda = 1; W_q initialised with std 1/sqrt(width d)",
                       factor=lambda n_keys, head_dim, cfg: unscaled(n_keys, head_dim),
                       query_init_std=t5_query_init_std)

"""log-n that only ever raises the scale, per query (docs/techniques.md section 1)."""
from __future__ import annotations

import math

import jax.numpy as jnp

from model.scales.logn import LOGN_N0
from model.scales.standard import standard
from model.variants import ScaleVariant


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


VARIANT = ScaleVariant(
    name="logn_causal", doc="max(1, log(n)/log(n0))/sqrt(d): standard up to n0 keys",
    fields=(LOGN_N0,),
    factor=lambda n_keys, head_dim, cfg: logn_causal(n_keys, head_dim, n0=cfg.logn_n0))

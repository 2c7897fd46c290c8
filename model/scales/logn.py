"""The entropy-invariant log-n scale (docs/techniques.md section 1)."""
from __future__ import annotations

import math

import jax.numpy as jnp

from model.variants import Field, ScaleVariant, at_least


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


# logn_causal (logn_causal.py) uses the same reference length
LOGN_N0 = Field("logn_n0", 512, "log-n scales: the number of keys at which lambda = 1/sqrt(d)",
                at_least(2), eval_time=True, bad=(1,))
LOGN_FLOOR = Field("logn_floor", 16, "logn: key counts below this are raised to it (short and "
                   "fully padded rows)", at_least(1), eval_time=True, bad=(0,))

VARIANT = ScaleVariant(
    name="logn", doc="log(n)/log(n0)/sqrt(d), n the number of valid keys of the query",
    fields=(LOGN_N0, LOGN_FLOOR),
    factor=lambda n_keys, head_dim, cfg: logn(n_keys, head_dim, n0=cfg.logn_n0,
                                              floor=cfg.logn_floor))

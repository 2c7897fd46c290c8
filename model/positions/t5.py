"""T5 relative position bias (Raffel et al. 2020): one learned scalar per head and bucket.

The offset j - i (T5's memory_position - query_position) is mapped to a bucket: in a
bidirectional model half the buckets are for keys on the right (offset > 0) and half for the
rest; a causal model spends all of them on keys on the left. Within a side, the first half of
the buckets are exact distances, the rest are log-spaced up to max_distance, beyond which
every distance shares the last bucket. The bias is added after the scale.

As in T5, one table serves the whole encoder by default (model.t5_shared): the Encoder builds
this module once (parameters `encoder/relative_position/bias`), computes the bias once per
forward pass and hands the array to every layer. With t5_shared=False each attention layer
owns a table (`.../block_i/attention/relative_position/bias`).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from model.positions.base import RelativeTerms, key_offset
from model.variants import Field, PositionVariant, any_value, unbounded


def t5_bucket(offset, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
  """offset = key position - query position (int array) -> bucket in [0, num_buckets)."""
  n = num_buckets
  if bidirectional:
    n //= 2
    side = jnp.where(offset > 0, n, 0)  # keys to the right use the upper half
    dist = jnp.abs(offset)
  else:
    side = 0
    dist = jnp.maximum(-offset, 0)  # keys to the right (masked anyway) share bucket 0
  exact = n // 2
  # float32 and truncation as in the public implementations, so boundaries agree
  ratio = jnp.log(jnp.maximum(dist, exact).astype(jnp.float32) / exact)
  far = exact + (ratio / math.log(max_distance / exact) * (n - exact)).astype(jnp.int32)
  far = jnp.minimum(far, n - 1)
  return side + jnp.where(dist < exact, dist, far)


class T5Bias(nn.Module):
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  width: int = 256  # only for T5's initialisation scale

  @nn.compact
  def __call__(self, q_pos, k_pos, causal: bool = False):
    table = self.param("bias", nn.initializers.normal(self.width ** -0.5),
                       (self.num_buckets, self.num_heads))
    bucket = t5_bucket(key_offset(q_pos, k_pos), not causal, self.num_buckets,
                       self.max_distance)
    bias = jnp.take(table, bucket, axis=0)  # [q, k, H]
    return RelativeTerms(bias=jnp.transpose(bias, (2, 0, 1))[None])


def _buckets_check(value, cfg):
  del cfg
  return None if value >= 4 and value % 2 == 0 else "must be even and >= 4"


def _distance_check(value, cfg):
  # the log-spaced buckets run from the last exact distance to max_distance
  exact = cfg.t5_num_buckets // 2 if cfg.causal else cfg.t5_num_buckets // 4
  if value <= exact:
    return (f"must exceed the {exact} exact distances of {cfg.t5_num_buckets} buckets "
            f"({'causal' if cfg.causal else 'bidirectional'})")
  return None


FIELDS = (
    Field("t5_num_buckets", 32, "number of relative-position buckets (even)", _buckets_check,
          bad=(31, 2)),
    Field("t5_max_distance", 128, "distance beyond which every offset shares the last bucket",
          _distance_check, bad=(8,)),
    Field("t5_shared", True, "one bias table for the whole encoder, computed once per forward "
          "pass (T5); false: one table per layer", any_value),
)

VARIANT = PositionVariant(
    name="t5", doc="a learned scalar per head and log-spaced bucket of j - i, after the scale",
    fields=FIELDS, terms=lambda cfg: frozenset({"bias"}), max_length=unbounded,
    shared=lambda cfg: cfg.t5_shared,
    relative=lambda cfg: T5Bias(num_heads=cfg.num_heads, num_buckets=cfg.t5_num_buckets,
                                max_distance=cfg.t5_max_distance, width=cfg.width))

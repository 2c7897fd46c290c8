"""Dropout whose random bits are computed inside the fused elementwise kernel.

`flax.linen.Dropout` draws a float32 uniform per element through `jax.random`, whose CPU
lowering of Threefry-2x32 is a rolled loop that reads and writes the whole counter array
five times, a large part of a CPU train step. Here the same Threefry-2x32 (20 rounds;
Salmon et al. 2011) is written with jnp integer ops, so XLA fuses the hash of each
element's index with the comparison and the select: no random bits are ever stored. The bits
are exactly `jax.random.bits(key, shape, jnp.uint32)` of a Threefry key (tests/test_dropout.py),
so the statistics are jax's own; only the speed differs (benchmarks/mlm_throughput.py).

An element is dropped when its 32-bit draw is below round(rate * 2^32): the rate is exact to
2^-32 and kept values are divided by 1 - rate.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# Threefry-2x32 rotation constants and key-schedule parity (Random123, as in jax.random)
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotl(x, r: int):
  return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def threefry_2x32(k0, k1, x0, x1):
  """Threefry-2x32, 20 rounds, on uint32 arrays: (k0, k1) key words, (x0, x1) counters."""
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):  # 5 groups of 4 rounds, a key injection after each
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotl(x1, r)
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0, x1


def uint32_bits(key, shape):
  """jax.random.bits(key, shape, uint32) for a Threefry key, as fusible elementwise ops.

  Element i (row-major) hashes the counter (0, i) and xors the two output words, which is what
  jax does with `jax_threefry_partitionable` (the default). Other PRNG implementations fall
  back to jax.random.bits.
  """
  data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) \
      else key
  size = math.prod(shape)
  if data.shape != (2,) or size >= 2 ** 32:
    return jax.random.bits(key, shape, jnp.uint32)
  index = jax.lax.iota(jnp.uint32, size).reshape(shape)
  hi, lo = threefry_2x32(data[0], data[1], jnp.zeros_like(index), index)
  return hi ^ lo


def dropout(key, x, rate: float):
  """Inverted dropout: each element is zeroed with probability `rate`, the rest / (1 - rate)."""
  if rate <= 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  threshold = jnp.uint32(min(round(rate * 2 ** 32), 2 ** 32 - 1))
  keep = uint32_bits(key, x.shape) >= threshold
  return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """Drop-in for nn.Dropout(rate)(x, deterministic); draws from the 'dropout' RNG stream."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate <= 0.0:
      return x
    return dropout(self.make_rng("dropout"), x, self.rate)

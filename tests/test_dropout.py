"""model/dropout.py: our fused Threefry equals the published cipher and jax's bits; dropout
drops at its rate, rescales exactly, and differentiates as a fixed mask."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.dropout import Dropout, dropout, threefry_2x32, uint32_bits


@pytest.mark.parametrize("key, counter, expected", [
    # Random123 known-answer vectors for Threefry-2x32, 20 rounds (kat_vectors)
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6b200159, 0x99ba4efe)),
    ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff), (0x1cb996fc, 0xbb002be7)),
    ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3), (0xc4923a9c, 0x483df7a0)),
])
def test_threefry_known_answers(key, counter, expected):
  u = lambda v: jnp.asarray(v, jnp.uint32)
  out = jax.jit(threefry_2x32)(u(key[0]), u(key[1]), u(counter[0]), u(counter[1]))
  assert tuple(int(o) for o in out) == expected


@pytest.mark.parametrize("key", [jax.random.PRNGKey(7), jax.random.key(3)])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 7, 11), (32, 64, 256)])
def test_bits_are_jax_random_bits(key, shape):
  np.testing.assert_array_equal(np.asarray(jax.jit(uint32_bits, static_argnums=1)(key, shape)),
                                np.asarray(jax.random.bits(key, shape, jnp.uint32)))


def test_other_prng_implementations_fall_back():
  key = jax.random.key(0, impl="rbg")
  np.testing.assert_array_equal(np.asarray(uint32_bits(key, (4, 9))),
                                np.asarray(jax.random.bits(key, (4, 9), jnp.uint32)))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_rate_and_rescaling(rate):
  x = jnp.ones((256, 1024))
  y = np.asarray(jax.jit(dropout, static_argnums=2)(jax.random.PRNGKey(0), x, rate))
  kept = y != 0
  n = kept.size
  # dropped fraction within 5 binomial standard deviations of the rate
  assert abs((1 - kept.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)


def test_edges_and_gradient():
  key, x = jax.random.PRNGKey(1), jax.random.normal(jax.random.PRNGKey(2), (64, 32))
  assert dropout(key, x, 0.0) is x
  np.testing.assert_array_equal(np.asarray(dropout(key, x, 1.0)), 0.0)
  rate = 0.3
  g = jax.grad(lambda v: jnp.sum(dropout(key, v, rate) * 2.0))(x)
  keep = np.asarray(dropout(key, jnp.ones_like(x), rate)) != 0
  np.testing.assert_allclose(np.asarray(g), np.where(keep, 2.0 / (1 - rate), 0.0), rtol=1e-6)


class _Two(nn.Module):
  @nn.compact
  def __call__(self, x, deterministic):
    return Dropout(0.5, name="a")(x, deterministic), Dropout(0.5, name="b")(x, deterministic)


def test_module_streams():
  x = jnp.ones((16, 128))
  run = lambda seed, det=False: _Two().apply({}, x, det, rngs={"dropout": jax.random.PRNGKey(seed)})
  a, b = run(0)
  a2, _ = run(0)
  c, _ = run(1)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))  # same key, same mask
  assert not np.array_equal(np.asarray(a), np.asarray(b))  # each site its own stream
  assert not np.array_equal(np.asarray(a), np.asarray(c))  # a new key, a new mask
  d, e = _Two().apply({}, x, True)  # deterministic: identity, needs no key
  np.testing.assert_array_equal(np.asarray(d), np.asarray(x))

"""Exact accumulation (objectives/accumulation.py) equals the full-batch gradient for the
AM-Softmax and the symmetric losses too, with dropout on, and the naive mode does not."""
from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectives.accumulation import example_keys, make_grad_fn
from objectives.contrastive import LossConfig, contrastive_loss

B, MICRO, D_IN, D = 8, 2, 6, 5
KEEP = 0.8
# unoptimised code compiles faster and computes the same values; each program runs once
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _embed(params, batch, keys):
  """A linear encoder with dropout on its output, each view with fold_in(example key, view)."""

  def view(x, key):
    keep = jax.random.bernoulli(key, KEEP, (D,))
    return jnp.tanh(x @ params["w"] + params["b"]) * keep / KEEP

  def example(x, key):
    return jax.vmap(view)(x, jnp.stack([jax.random.fold_in(key, v) for v in range(2)]))

  return jax.vmap(example)(batch["x"], keys), None


def _loss(name, pairing="cross", symmetric=False, margin=0.0):
  c = LossConfig.from_config(types.SimpleNamespace(
      name=name, scale=10.0, temperature=0.0, margin=margin, pairing=pairing,
      symmetric=symmetric))
  return lambda h: contrastive_loss(h, c)


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("name, pairing, symmetric, margin, naive", [
    ("amsoftmax", "cross", False, 0.3, True),
    ("amsoftmax", "all", False, 0.3, False),
    ("infonce", "cross", True, 0.0, True),
    ("amsoftmax", "cross", True, 0.3, False),
])
def test_exact_equals_full_batch_gradient(name, pairing, symmetric, margin, naive):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(D_IN, D)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=D), jnp.float32)}
  x = rng.normal(size=(B, 2, D_IN)).astype(np.float32)
  x[::2, 1] = x[::2, 0]  # some examples as in SimCSE: one input, two dropout views
  batch, key = {"x": jnp.asarray(x)}, jax.random.PRNGKey(3)
  loss = _loss(name, pairing, symmetric, margin)
  # the reference: plain autodiff of the loss of the whole batch at once
  ref_value, ref = jit(jax.value_and_grad(
      lambda p: loss(_embed(p, batch, example_keys(key, B))[0])[0]))(params)
  (value, _), exact = jit(make_grad_fn("exact", _embed, loss, MICRO))(params, batch, key)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  for leaf, want in zip(jax.tree_util.tree_leaves(exact), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(leaf, want, rtol=1e-4, atol=1e-6)
  if naive:  # each micro-batch sees only its own negatives: a different gradient
    (_, _), other = jit(make_grad_fn("naive", _embed, loss, MICRO))(params, batch, key)
    ref, other = _flat(ref), _flat(other)
    assert np.linalg.norm(other - ref) / np.linalg.norm(ref) > 0.05

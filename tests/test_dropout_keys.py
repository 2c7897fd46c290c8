"""The per-example dropout key contract (objectives/accumulation.py, training/contrastive.py).

Documented rule: example i of a step's full batch gets fold_in(step key, i), and view v of that
example is encoded with dropout key fold_in(that key, v), whichever micro-batch it falls in. The
reference keys here are built from that rule in a Python loop, never with the helpers under test.
"""
from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.sentence import SentenceEncoder
from objectives.accumulation import example_keys, make_grad_fn
from objectives.contrastive import LossConfig, contrastive_loss
from training.contrastive import make_embed

STEP_KEY = jax.random.PRNGKey(42)
# unoptimised code compiles faster and computes the same values; each program runs once or twice
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def rule_keys(key, b):
  """[b] keys: fold_in(key, i) for the index i of each example in the full batch."""
  return jnp.stack([jax.random.fold_in(key, i) for i in range(b)])


def test_example_keys_follow_the_rule():
  np.testing.assert_array_equal(example_keys(STEP_KEY, 6), rule_keys(STEP_KEY, 6))


def test_each_view_is_encoded_with_fold_in_of_its_example_key():
  cfg = ModelConfig.from_dict(dict(vocab_size=30, width=8, num_layers=1, num_heads=2,
                                   mlp_dim=16, dropout=0.3))
  model = SentenceEncoder(cfg, pooling="mean")
  tokens = np.array(jax.random.randint(jax.random.PRNGKey(1), (3, 2, 6), 5, 30), np.int32)
  tokens[:, :, 5] = 0
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens[0], tokens[0] != 0)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype),
                                  shapes["params"])
  keys = rule_keys(STEP_KEY, 3)
  h, aux = jit(make_embed(model, "supervised"))(params, {"tokens": tokens}, keys)
  assert aux is None

  @jit
  def alone(x, key):  # one view on its own, dropout on with the key the rule gives it
    return model.apply({"params": params}, x[None], (x != 0)[None], deterministic=False,
                       rngs={"dropout": key})[0]

  for i in range(3):
    for v in range(2):
      want = alone(tokens[i, v], jax.random.fold_in(keys[i], v))
      np.testing.assert_allclose(h[i, v], want, rtol=1e-5, atol=1e-6)
  # dropout really is on: the other view's key gives a different encoding
  other = alone(tokens[0, 0], jax.random.fold_in(keys[0], 1))
  assert float(jnp.max(jnp.abs(other - h[0, 0]))) > 1e-3


def _key_embed(params, batch, keys):
  """An embedding that is a function of each example's key alone: h = s * z(key), z two standard
  normal 4-vectors and s a per-dimension scale (a common scale would cancel in the cosines);
  it shows which key each example was given."""
  del batch
  z = jax.vmap(lambda k: jax.random.normal(k, (2, 4)))(keys)
  return params["s"] * z, None


@pytest.mark.parametrize("mode", ["none", "exact", "naive"])
def test_grad_fns_give_each_example_its_full_batch_key(mode):
  b, micro = 8, 2
  c = LossConfig.from_config(types.SimpleNamespace(name="infonce", scale=0.0, temperature=0.1,
                                                   margin=0.0, pairing="cross",
                                                   symmetric=False))
  loss = lambda h: contrastive_loss(h, c)
  params = {"s": jnp.array([1.5, 0.5, 1.0, 2.0])}
  (value, _), grads = jit(make_grad_fn(mode, _key_embed, loss, micro))(
      params, {"x": jnp.zeros((b, 1))}, STEP_KEY)
  # the reference: keys by the rule over the whole batch, micro-batch i holding examples
  # [2i, 2i + 2) with their full-batch indices (not 0 and 1 again)
  z = jax.vmap(lambda k: jax.random.normal(k, (2, 4)))(rule_keys(STEP_KEY, b))
  if mode == "naive":
    fn = lambda s: sum(loss(s * z[i:i + micro])[0] for i in range(0, b, micro)) / (b // micro)
  else:
    fn = lambda s: loss(s * z)[0]
  want_value, want_grad = jit(jax.value_and_grad(fn))(params["s"])
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  np.testing.assert_allclose(grads["s"], want_grad, rtol=1e-4, atol=1e-6)
  assert float(jnp.min(jnp.abs(want_grad))) > 1e-3  # a gradient that says something

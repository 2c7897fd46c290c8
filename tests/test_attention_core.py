"""Softmax attention: log-n scale, padding invariance, fully masked rows."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig
from model.encoder import MlmModel
from model.masks import num_valid_keys, padding_mask
from model.scales.logn import logn
from model.scales.standard import standard


def _cfg(**kw):
  base = dict(vocab_size=50, width=32, num_heads=4, num_layers=2, mlp_dim=64, dropout=0.0)
  base.update(kw)
  return ModelConfig.from_dict(base)


def test_logn_formula_and_floor():
  n = jnp.array([1, 16, 64, 512, 1024])
  got = logn(n, 64, n0=512, floor=16)
  want = [math.log(16) / math.log(512) / 8, math.log(16) / math.log(512) / 8,
          math.log(64) / math.log(512) / 8, 1 / 8, math.log(1024) / math.log(512) / 8]
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("position", ["rope", "none", "sinusoidal", "learned"])
def test_logn_equals_standard_at_n0(position):
  # with every key valid and n = n0, the whole model's output must be bit-identical
  n0 = 24
  kw = dict(position=position, logn_n0=n0, max_len=64)
  std, ln = MlmModel(_cfg(scale="standard", **kw)), MlmModel(_cfg(scale="logn", **kw))
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, n0), 5, 50)
  valid = jnp.ones_like(tokens, bool)
  params = std.init(jax.random.PRNGKey(1), tokens, valid)
  np.testing.assert_array_equal(std.apply(params, tokens, valid), ln.apply(params, tokens, valid))
  assert float(logn(jnp.array([n0]), 8, n0=n0)[0]) == float(standard(jnp.array([n0]), 8)[0])


@pytest.mark.parametrize("scale", ["standard", "logn"])
@pytest.mark.parametrize("position", ["rope", "none", "sinusoidal", "learned"])
def test_padding_does_not_change_unpadded_outputs(scale, position):
  cfg = _cfg(scale=scale, position=position, max_len=64)
  model = MlmModel(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (1, 10), 5, 50)
  padded = jnp.concatenate([tokens, jnp.zeros((1, 6), tokens.dtype)], axis=1)
  params = model.init(jax.random.PRNGKey(1), tokens, tokens > 0)
  a = model.apply(params, tokens, tokens > 0)
  b = model.apply(params, padded, padded > 0)
  np.testing.assert_allclose(a, b[:, :10], rtol=2e-5, atol=2e-5)


def test_fully_masked_rows_are_finite_zero():
  cfg = _cfg()
  layer = MultiHeadAttention(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, cfg.width))
  valid = jnp.zeros((2, 7), bool).at[0].set(True)  # second sequence entirely padding
  mask = padding_mask(valid)
  params = layer.init(jax.random.PRNGKey(1), x, mask, jnp.arange(7))
  out = layer.apply(params, x, mask, jnp.arange(7))
  assert bool(jnp.all(jnp.isfinite(out)))
  grads = jax.grad(lambda p: layer.apply(p, x, mask, jnp.arange(7)).sum())(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  # a fully masked row attends to nothing: the output is the output projection's bias
  bias = params["params"]["out"]["bias"]
  np.testing.assert_allclose(out[1], jnp.broadcast_to(bias, out[1].shape), atol=1e-6)


def test_valid_key_count():
  valid = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  np.testing.assert_array_equal(num_valid_keys(padding_mask(valid))[:, 0, 0, 0], [3, 1])


def test_unknown_names_list_valid_ones():
  for key, value in [("scale", "bogus"), ("position", "bogus"), ("attention", "bogus"),
                     ("norm", "bogus"), ("activation", "bogus")]:
    with pytest.raises(ValueError, match="valid names"):
      _cfg(**{key: value})
  with pytest.raises(ValueError, match="does not divide"):
    _cfg(num_heads=5)


def test_entropy_sums_match_the_formula():
  from model.attention.softmax import entropy_sums, masked_softmax
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 7))
  valid = jnp.array([[1, 1, 1, 1, 0, 0, 0], [0] * 7], bool)  # second sequence: no keys at all
  mask = padding_mask(valid)
  p = np.asarray(masked_softmax(logits, mask), np.float64)
  sums, counts = entropy_sums(jnp.asarray(p, jnp.float32), mask)
  want = [-(p[0, h][:, :4] * np.log(p[0, h][:, :4])).sum() for h in range(3)]
  np.testing.assert_allclose(sums, want, rtol=1e-5)
  np.testing.assert_array_equal(counts, [5, 5, 5])  # only the 5 rows of the first sequence


def test_uniform_attention_has_entropy_log_n():
  from evaluation.entropy import entropy_by_length
  model = MlmModel(_cfg(position="none"))
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32), jnp.ones((1, 8), bool))
  params = jax.tree_util.tree_map_with_path(  # zero queries: every logit 0, attention uniform
      lambda path, x: jnp.zeros_like(x) if "query" in jax.tree_util.keystr(path) else x,
      params["params"])
  stream = np.random.default_rng(0).integers(5, 50, 3000).astype(np.int32)
  res = entropy_by_length(model, params, stream, [16, 128], max_tokens=512, batch_tokens=512)
  for n in (16, 128):
    np.testing.assert_allclose(res[n]["entropy"], math.log(n), rtol=1e-5)
    assert len(res[n]["per_layer"]) == 2

"""T5 relative-position buckets against the published table (32 buckets, max distance 128).

The expected tables are written out from their ranges, not computed by a formula, so that a
mistake in the bucket function (sign convention, rounding at a boundary, the causal split)
cannot be reproduced by the test. Offsets follow T5: key position - query position. Then the
encoder-wide table (model.t5_shared, the default, as in T5) against the per-layer option.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig
from model.encoder import MlmModel
from model.positions.t5 import T5Bias, t5_bucket

# (first distance, last distance, bucket); the last range is open-ended
BIDIRECTIONAL_RANGES = [  # 16 buckets per side: 8 exact, 8 log-spaced up to 128
    *[(r, r, r) for r in range(8)],
    (8, 11, 8), (12, 15, 9), (16, 22, 10), (23, 31, 11), (32, 45, 12), (46, 63, 13),
    (64, 90, 14), (91, None, 15),
]
CAUSAL_RANGES = [  # all 32 buckets for keys on the left: 16 exact, 16 log-spaced up to 128
    *[(r, r, r) for r in range(16)],
    (16, 18, 16), (19, 20, 17), (21, 23, 18), (24, 26, 19), (27, 30, 20), (31, 34, 21),
    (35, 39, 22), (40, 45, 23), (46, 51, 24), (52, 58, 25), (59, 66, 26), (67, 76, 27),
    (77, 86, 28), (87, 98, 29), (99, 112, 30), (113, None, 31),
]
OFFSETS = np.arange(-1000, 1001)


def _lookup(ranges, dist):
  for lo, hi, bucket in ranges:
    if lo <= dist and (hi is None or dist <= hi):
      return bucket
  raise AssertionError(dist)


def test_bidirectional_table():
  # keys to the right of the query (offset > 0) use the same ranges plus 16
  want = [_lookup(BIDIRECTIONAL_RANGES, abs(o)) + (16 if o > 0 else 0) for o in OFFSETS]
  got = t5_bucket(jnp.asarray(OFFSETS), bidirectional=True, num_buckets=32, max_distance=128)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_causal_table():
  # only keys on the left are told apart; keys on the right (masked anyway) share bucket 0
  want = [_lookup(CAUSAL_RANGES, -o) if o <= 0 else 0 for o in OFFSETS]
  got = t5_bucket(jnp.asarray(OFFSETS), bidirectional=False, num_buckets=32, max_distance=128)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_module_uses_key_minus_query():
  # in the layer, query i and key j look up bucket(j - i): a key 5 to the right of query 0
  # uses bucket 16 + 5, a key 5 to its left bucket 5
  module = T5Bias(num_heads=2)
  pos = jnp.arange(12)
  params = module.init(jax.random.PRNGKey(0), pos, pos)
  table = params["params"]["bias"]
  bias = module.apply(params, pos, pos).bias  # [1, H, q, k]
  np.testing.assert_array_equal(bias[0, :, 0, 5], table[21])
  np.testing.assert_array_equal(bias[0, :, 5, 0], table[5])
  causal = module.apply(params, pos, pos, causal=True).bias
  np.testing.assert_array_equal(causal[0, :, 11, 0], table[11])  # 11 exact buckets when causal
  np.testing.assert_array_equal(bias[0, :, 11, 0], table[8])  # 8..11 share bucket 8


# ---------------------------------------------------------------- one table for the encoder

def _model(**kw):
  cfg = ModelConfig.from_dict(dict(vocab_size=30, width=16, num_heads=2, num_layers=3,
                                   mlp_dim=32, dropout=0.0, position="t5", scale="none", **kw))
  return MlmModel(cfg)


def _record_biases(model, params, tokens, valid):
  """Run the model; return (bias tables computed, in call order, [paths]) and the position
  terms every attention layer received from the encoder (None: it computed its own)."""
  computed, received = [], []

  def spy(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, T5Bias) and context.method_name == "__call__":
      computed.append(("/".join(context.module.path), np.asarray(out.bias)))
    if isinstance(context.module, MultiHeadAttention) and context.method_name == "__call__":
      shared = args[4] if len(args) > 4 else kwargs.get("shared")
      received.append(None if shared is None else np.asarray(shared["bias"]))
    return out

  with nn.intercept_methods(spy):
    out = model.apply(params, tokens, valid)
  return computed, received, out


def _batch(n, rows, seed):
  tokens = jnp.asarray(np.random.default_rng(seed).integers(5, 30, (rows, n)), jnp.int32)
  return tokens, jnp.ones((rows, n), bool)


def _bucket_bias(table, n):
  """[H, n, n] bias from the written-out ranges: key j, query i, offset j - i."""
  bucket = [[_lookup(BIDIRECTIONAL_RANGES, abs(j - i)) + (16 if j > i else 0) for j in range(n)]
            for i in range(n)]
  return np.transpose(np.asarray(table)[np.array(bucket)], (2, 0, 1))


def test_shared_table_computed_once_and_used_by_every_layer():
  n = 20
  tokens, valid = _batch(n, rows=2, seed=0)
  shared, per_layer = _model(), _model(t5_shared=False)
  params = shared.init(jax.random.PRNGKey(0), tokens, valid)
  enc = params["params"]["encoder"]
  # one table at the encoder, none in the layers
  assert set(enc["relative_position"]) == {"bias"}
  assert all("relative_position" not in enc[f"block_{i}"]["attention"] for i in range(3))
  computed, received, out = _record_biases(shared, params, tokens, valid)
  assert [path for path, _ in computed] == ["encoder/relative_position"]  # once per forward
  want = _bucket_bias(enc["relative_position"]["bias"], n)
  assert len(received) == 3
  for bias in received:  # every layer gets that one bias
    np.testing.assert_array_equal(bias[0], want)

  # per-layer option: num_layers tables, where they always were, each the bucket formula
  p2 = per_layer.init(jax.random.PRNGKey(0), tokens, valid)
  enc2 = p2["params"]["encoder"]
  assert "relative_position" not in enc2
  tables = [enc2[f"block_{i}"]["attention"]["relative_position"]["bias"] for i in range(3)]
  assert all(t.shape == (32, 2) for t in tables)
  computed2, received2, _ = _record_biases(per_layer, p2, tokens, valid)
  assert received2 == [None] * 3
  assert [path for path, _ in computed2] == [
      f"encoder/block_{i}/attention/relative_position" for i in range(3)]
  for (_, bias), table in zip(computed2, tables):
    np.testing.assert_array_equal(bias[0], _bucket_bias(table, n))

  # the shared model's parameters with its table moved into every layer: the per-layer
  # model's tree, and the same outputs
  moved = jax.tree_util.tree_map(lambda x: x, params)  # a copy of the nested dicts
  table = moved["params"]["encoder"].pop("relative_position")
  for i in range(3):
    moved["params"]["encoder"][f"block_{i}"]["attention"]["relative_position"] = table
  assert jax.tree_util.tree_structure(moved) == jax.tree_util.tree_structure(p2)
  np.testing.assert_allclose(per_layer.apply(moved, tokens, valid), out, rtol=1e-6, atol=1e-6)


def test_shared_table_through_remat_gets_gradients():
  tokens, valid = _batch(10, rows=1, seed=1)
  plain, remat = _model(), _model(remat=True)
  params = jax.jit(plain.init)(jax.random.PRNGKey(0), tokens, valid)
  # compiled, one program per model: run op by op, the remat block's backward pass cost
  # twice the time of compiling it
  loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, tokens, valid) ** 2)))(params)
  g_plain, g_remat = loss(plain), loss(remat)
  table_grad = g_plain["params"]["encoder"]["relative_position"]["bias"]
  assert float(jnp.max(jnp.abs(table_grad))) > 0  # every layer's use flows back to the table
  np.testing.assert_allclose(g_remat["params"]["encoder"]["relative_position"]["bias"],
                             table_grad, rtol=1e-5, atol=1e-7)

"""T5 relative-position buckets against the published table (32 buckets, max distance 128).

The expected tables are written out from their ranges, not computed by a formula, so that a
mistake in the bucket function (sign convention, rounding at a boundary, the causal split)
cannot be reproduced by the test. Offsets follow T5: key position - query position.
"""
import jax
import jax.numpy as jnp
import numpy as np

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

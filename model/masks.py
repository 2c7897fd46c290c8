"""Boolean attention masks, shape [batch, 1, q_len, k_len]; True = may attend.

Pure functions (docs/techniques.md section 2). Combine masks with `&`.
"""
from __future__ import annotations

import jax.numpy as jnp


def padding_mask(valid):
  """valid: [b, n] bool (True at real tokens) -> keys that are real tokens."""
  return valid[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None):
  k_len = q_len if k_len is None else k_len
  i = jnp.arange(q_len)[:, None]
  j = jnp.arange(k_len)[None, :]
  return (j <= i)[None, None]


def num_valid_keys(mask):
  """Number of keys each query may attend to: [b, 1, q, 1] int32 (0 for fully masked rows)."""
  return jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)


def window_mask(n: int, window: int, causal: bool = False):
  """Sliding window of `window` tokens: |i - j| < window; causal: j in (i - window, i]."""
  i = jnp.arange(n)[:, None]
  j = jnp.arange(n)[None, :]
  near = jnp.abs(i - j) < window
  return (near & (j <= i) if causal else near)[None, None]


def unilm_mask(segment_ids):
  """UniLM / seq2seq mask from segment ids s in {0, 1} [b, n].

  With c = cumsum(s), i may attend to j iff c_j <= c_i: segment A (s = 0, c = 0) sees all of
  A; each token of segment B (s = 1, c counts B tokens so far) sees A and B up to itself.
  """
  c = jnp.cumsum(segment_ids.astype(jnp.int32), axis=-1)
  return (c[:, None, None, :] <= c[:, None, :, None])


def span_mask(valid):
  """GlobalPointer spans (start i, end j): i <= j and both tokens unpadded -> [b, 1, n, n]."""
  n = valid.shape[-1]
  i = jnp.arange(n)[:, None]
  j = jnp.arange(n)[None, :]
  return (i <= j)[None, None] & valid[:, None, :, None] & valid[:, None, None, :]

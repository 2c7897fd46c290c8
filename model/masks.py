"""Boolean attention masks, shape [batch, 1, q_len, k_len]; True = may attend.

Pure functions (REFERENCE.md section 2). Combine masks with `&`.
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

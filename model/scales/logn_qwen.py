"""Qwen's inference-time log-n scale, by query position (docs/techniques.md section 8.1)."""
from __future__ import annotations

import jax.numpy as jnp

from model.positions.rope_scaling import ORIGINAL_LENGTH, require_original_length
from model.scales.standard import standard
from model.variants import ScaleVariant


def logn_qwen(q_index, head_dim: int, n_train: int, **_):
  """(log(i) / log(n_train) if i > n_train else 1) / sqrt(d) for the query at 1-based position i.

  Qwen multiplies each query past the training length by log base n_train of its position: a
  function of where the query is, not of how many keys it sees (log-n's n), so it leaves a
  model exactly as trained on sequences no longer than n_train. n_train >= 2.
  """
  i = q_index.astype(jnp.float32)
  ratio = jnp.log(i) / jnp.log(jnp.float32(n_train))
  ratio = jnp.where(i > n_train, ratio, 1.0)  # exactly standard up to n_train
  return standard(q_index, head_dim) * ratio


def _build_check(cfg) -> None:
  require_original_length(cfg, "scale=logn_qwen")


VARIANT = ScaleVariant(
    name="logn_qwen", doc="(log(i)/log(L0) past the training length L0, else 1)/sqrt(d), i the "
    "query's position", fields=(ORIGINAL_LENGTH,), build_check=_build_check, by_position=True,
    factor=lambda q_index, head_dim, cfg: logn_qwen(q_index, head_dim,
                                                    n_train=cfg.rope_original_length))

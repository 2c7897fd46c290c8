"""Normalisation layers by `model.norm` (docs/techniques.md section 5)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.variants import Field, positive

NORMS = {
    "post": nn.LayerNorm,  # x = LN(x + f(x)): BERT, RoFormer
    "pre": nn.LayerNorm,  # x = x + f(LN(x)): GPT-2 and later; trains without warmup tricks
    "rmsnorm": nn.RMSNorm,  # pre-norm with RMSNorm (no centring, no bias)
}

# flax's default; BERT and RoFormer checkpoints were trained with 1e-12, which differs
# visibly where the normalised vectors are small (freshly initialised embeddings)
NORM_EPSILON = Field("norm_epsilon", 1e-6, "epsilon of every LayerNorm / RMSNorm, the MLM "
                     "head's included (BERT, RoFormer: 1e-12)", positive, bad=(0.0,))


def block_norm(cfg, name=None):
  """The norm of model.norm, as the blocks and the encoder use it."""
  return NORMS[cfg.norm](epsilon=cfg.norm_epsilon, dtype=jnp.dtype(cfg.dtype), name=name)

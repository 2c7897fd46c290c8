"""Normalisation layers by `model.norm` (docs/techniques.md section 5)."""
from __future__ import annotations

import flax.linen as nn

NORMS = {
    "post": nn.LayerNorm,  # x = LN(x + f(x)): BERT, RoFormer
    "pre": nn.LayerNorm,  # x = x + f(LN(x)): GPT-2 and later; trains without warmup tricks
    "rmsnorm": nn.RMSNorm,  # pre-norm with RMSNorm (no centring, no bias)
}

"""Multi-head attention layer: projections, position terms, scale, and a kernel by name."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.attention import get_attention
from model.attention.base import AttentionInputs
from model.attention.softmax import entropy_sums
from model.dropout import Dropout
from model.masks import num_valid_keys
from model.positions import NO_TERMS, get_position
from model.scale import QUERY_INIT_STD, get_scale


class MultiHeadAttention(nn.Module):
  cfg: "ModelConfig"  # noqa: F821 (model/config.py)

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool = True):
    cfg = self.cfg
    h, d = cfg.num_heads, cfg.head_dim
    dtype = jnp.dtype(cfg.dtype)
    dense = lambda name, **kw: nn.DenseGeneral((h, d), dtype=dtype, name=name, **kw)
    q_init = {}
    if cfg.scale in QUERY_INIT_STD:  # scale=none: the 1/sqrt(d) lives in W_q's init instead
      q_init["kernel_init"] = nn.initializers.normal(QUERY_INIT_STD[cfg.scale](cfg.width, d))
    q, k, v = dense("query", **q_init)(x), dense("key")(x), dense("value")(x)

    relative = get_position(cfg.position).relative
    terms = NO_TERMS
    if relative:  # its parameters sit under one readable name, whichever encoding it is
      module = relative(cfg).clone(parent=self, name="relative_position")
      terms = module(positions, positions, cfg.causal)
    scale = get_scale(cfg.scale)(num_valid_keys(mask), d, n0=cfg.logn_n0, floor=cfg.logn_floor)

    def dropout(p):
      if cfg.attention_dropout == 0.0 or deterministic:
        return p
      return Dropout(cfg.attention_dropout, name="attention_dropout")(p, deterministic=False)

    def observe(p):
      # recorded only when the caller asks for the 'intermediates' collection (entropy eval)
      if self.is_mutable_collection("intermediates"):
        self.sow("intermediates", "attention_entropy", entropy_sums(p, mask))

    inputs = AttentionInputs(mask=mask, scale=scale, terms=terms, q_pos=positions,
                             k_pos=positions, causal=cfg.causal, dropout=dropout, x=x,
                             observe=observe)
    spec = get_attention(cfg.attention)
    if spec.module is not None:
      out = spec.module(cfg)(q, k, v, inputs)
    else:
      out = spec.fn(q, k, v, inputs, cfg)
    return nn.DenseGeneral(cfg.width, axis=(-2, -1), dtype=dtype, name="out")(out)

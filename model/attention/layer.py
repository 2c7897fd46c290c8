"""Multi-head attention layer: projections, position terms, scale, and a kernel by name."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from model.attention import cache, get_attention
from model.attention.base import AttentionInputs
from model.attention.fused import implementation
from model.attention.softmax import entropy_sums
from model.dropout import Dropout
from model.masks import num_valid_keys
from model.positions import NO_TERMS, RelativeTerms, checked_terms, get_position
from model.scales import get_scale


def scale_argument(scale, mask, positions):
  """What the scale is a function of: the number of keys each query may attend to
  [b, 1, q, 1], or (ScaleVariant.by_position) the queries' 1-based positions [1|b, 1, q, 1]."""
  if not scale.by_position:
    return num_valid_keys(mask)
  index = jnp.asarray(positions) + 1
  return index.reshape(index.size // index.shape[-1], 1, index.shape[-1], 1)


class MultiHeadAttention(nn.Module):
  """x [b, n, width] -> [b, n, width].

  shared: the position terms of an encoding whose one module serves every layer
  (PositionVariant.shared, e.g. T5's bias table), as the arrays the Encoder computed once;
  without them the layer builds its own relative module (`relative_position`).

  Decoding (model/attention/cache.py): a pass with the 'cache' collection mutable stores the
  keys and values; once they exist, a call is a decoding step of x [b, 1, width] at
  positions [b, 1] with a mask [b, 1, 1, K] over the cached slots.
  """
  cfg: "ModelConfig"  # noqa: F821 (model/config.py)

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool = True, shared=None):
    cfg = self.cfg
    h, d = cfg.num_heads, cfg.head_dim
    dtype = jnp.dtype(cfg.dtype)
    dense = lambda name, **kw: nn.DenseGeneral((h, d), dtype=dtype, name=name, **kw)
    scale = get_scale(cfg.scale)
    q_init = {}
    if scale.query_init_std is not None:  # scale=none: the 1/sqrt(d) lives in W_q's init
      q_init["kernel_init"] = nn.initializers.normal(scale.query_init_std(cfg.width, d))
    q, k, v = dense("query", **q_init)(x), dense("key")(x), dense("value")(x)

    position, kernel = get_position(cfg.position), get_attention(cfg.attention)
    for variant in (position, kernel, scale):  # fields the task fills in are resolved by now
      variant.build_check(cfg)
    decoding = self.has_variable("cache", "key")
    # a decoding step's terms are the full pass's over every slot, at the query's row
    term_positions = cache.slots(mask) if decoding else positions
    terms = NO_TERMS
    if shared is not None:
      terms = RelativeTerms(**shared)
    elif position.relative:  # its parameters sit under one readable name, whichever encoding
      module = position.relative(cfg).clone(parent=self, name="relative_position")
      terms = checked_terms(position, module(term_positions, term_positions, cfg.causal), cfg)
    if decoding:
      q, k, v, terms = cache.step(self, q, k, v, positions, terms)
    elif self.is_mutable_collection("cache") and not self.is_initializing():
      cache.store(self, k, v, terms, positions)
    lam = scale.factor(scale_argument(scale, mask, positions), d, cfg)

    def dropout(p):
      if cfg.attention_dropout == 0.0 or deterministic:
        return p
      return Dropout(cfg.attention_dropout, name="attention_dropout")(p, deterministic=False)

    def observe(p):
      # recorded only when the caller asks for the 'intermediates' collection (entropy eval)
      if self.is_mutable_collection("intermediates"):
        self.sow("intermediates", "attention_entropy", entropy_sums(p, mask))

    inputs = AttentionInputs(mask=mask, scale=lam, terms=terms, q_pos=positions,
                             k_pos=positions, causal=cfg.causal, dropout=dropout, x=x,
                             observe=observe)
    if scale.logits_transform is not None:  # a scale of the logits themselves (entropy_norm)
      inputs = dataclasses.replace(
          inputs, logits_transform=lambda logits: scale.logits_transform(logits, mask, cfg))
    if kernel.module is not None:
      out = kernel.module(cfg)(q, k, v, inputs)
    elif cfg.attention_impl != "einsum" and not self.is_mutable_collection("intermediates"):
      # the fused call (validated at start-up); an entropy pass needs the probabilities,
      # which only the einsum path forms
      out = kernel.fused.fn(q, k, v, inputs, cfg, implementation(cfg))
    else:
      out = kernel.fn(q, k, v, inputs, cfg)
    return nn.DenseGeneral(cfg.width, axis=(-2, -1), dtype=dtype, name="out")(out)

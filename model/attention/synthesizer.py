"""Synthesizer attention: logits predicted without q.k (docs/techniques.md section 4).

  dense:      B = relu(X W1 + b1) W2 + b2, each token predicts its row of max_len logits
  random:     B = R, a learned max_len x max_len matrix per head
  factorized: B = R1 R2^T, learned low-rank factors [max_len, r] per head (random factorized)

B is cut to the first n rows and columns, masked (padding, causal, window, UniLM all apply)
and softmaxed; the values are the layer's usual v. The tables have max_len entries, so these
kernels cannot encode longer sequences: asked for one, they raise LengthBoundError.

Since the logits do not come from q.k, nothing that acts on q.k applies: no rotation, no
content or bias terms, and no logit scale (lambda tempers q.k, whose variance grows with d;
the synthesized logits have no such dependence). The q and k projections of the layer are
computed and unused.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.attention.base import ALL_MASKS
from model.attention.softmax import masked_softmax
from model.variants import Field, KernelVariant, LengthBoundError, positive


def check_length(name: str, n: int, max_len: int) -> None:
  if n > max_len:
    raise LengthBoundError(
        f"attention={name} synthesizes logits for at most model.max_len={max_len} positions "
        f"and cannot attend over a sequence of length {n}; evaluate at lengths <= {max_len} "
        "or train with a larger model.max_len")


def dense_logits(module, x, n: int, cfg):
  """relu(X W1 + b1) W2 + b2: each token predicts its row of max_len logits [b, h, n, n]."""
  h, d = cfg.num_heads, cfg.head_dim
  hidden = nn.relu(nn.DenseGeneral((h, d), dtype=x.dtype, name="w1")(x))
  w2 = module.param("w2", nn.initializers.lecun_normal(batch_axis=(0,)), (h, d, cfg.max_len))
  b2 = module.param("b2", nn.initializers.zeros, (h, cfg.max_len))
  return jnp.einsum("bnhd,hdl->bhnl", hidden, w2[..., :n].astype(x.dtype),
                    preferred_element_type=jnp.float32) + b2[:, None, :n]


def random_logits(module, x, n: int, cfg):
  """A learned max_len x max_len matrix per head [1, h, n, n]."""
  # unit-variance logits: attention starts random but not uniform, as in the paper
  r = module.param("logits", nn.initializers.normal(1.0),
                   (cfg.num_heads, cfg.max_len, cfg.max_len))
  return r[None, :, :n, :n]


def factorized_logits(module, x, n: int, cfg):
  """R1 R2^T with learned [max_len, r] factors per head [1, h, n, n]."""
  shape = (cfg.num_heads, cfg.max_len, cfg.synthesizer_rank)
  # std r^(-1/4) per factor: the logits R1 R2^T start with unit variance, like `random`
  init = nn.initializers.normal(cfg.synthesizer_rank ** -0.25)
  r1, r2 = module.param("r1", init, shape), module.param("r2", init, shape)
  return jnp.einsum("hqr,hkr->hqk", r1[:, :n], r2[:, :n])[None]


LOGITS = {"dense": dense_logits, "random": random_logits, "factorized": factorized_logits}


class Synthesizer(nn.Module):
  cfg: "ModelConfig"  # noqa: F821 (model/config.py)
  kind: str  # a key of LOGITS

  @nn.compact
  def __call__(self, q, k, v, inputs):
    n = v.shape[1]
    check_length(f"synthesizer_{self.kind}", n, self.cfg.max_len)
    logits = LOGITS[self.kind](self, inputs.x, n, self.cfg)
    probs = inputs.dropout(masked_softmax(logits, inputs.mask))
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


RANK = Field("synthesizer_rank", 8, "synthesizer_factorized: rank r of the learned logit "
             "factors", positive, bad=(0,))


def _variant(kind: str, doc: str, fields=()) -> KernelVariant:
  # the tables have model.max_len entries (a core field, shared with position=learned)
  return KernelVariant(
      name=f"synthesizer_{kind}", doc=doc, fields=fields, honours=frozenset(), masks=ALL_MASKS,
      probabilities=True, uses_scale=False, max_length=lambda cfg: cfg.max_len,
      module=lambda cfg: Synthesizer(cfg, kind))


VARIANTS = [
    _variant("dense", "each token predicts its row of logits: relu(X W1 + b1) W2 + b2"),
    _variant("random", "a learned max_len x max_len logit matrix per head"),
    _variant("factorized", "learned low-rank logits R1 R2^T per head", fields=(RANK,)),
]

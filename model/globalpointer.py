"""GlobalPointer: named entities as scored spans (Su Jianlin's GlobalPointer and Efficient
GlobalPointer posts; README section "Named-entity recognition (GlobalPointer)").

For entity type a the score of the span from token i to token j (inclusive) is

  globalpointer: s_a(i,j) = (R_i q_{i,a}) . (R_j k_{j,a}) / sqrt(d)
                 q, k: a projection of size 2d per type;
  efficient:     s_a(i,j) = (R_i q_i) . (R_j k_j) / sqrt(d) + start_a(i) + end_a(j)
                 q, k: ONE projection of size 2d shared by every type; start_a and end_a are
                 per-type linear functions of that projection, [q_i; k_i] (bert4keras reads
                 them from the projection, not from the encoder's h: fewer parameters).

R_m is RoPE (model/positions/rope.py, interleaved pairs as in the post's implementation), so
the dot product depends on the content and on j - i only: a span's score does not change when
the sentence around it shifts. A span is (i <= j, both spannable); every other (i, j) gets
NEG, a large negative that the loss and the decoder read as "certainly not an entity".
Nested and overlapping spans need nothing special: each (a, i, j) is its own binary decision.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from model.config import ModelConfig
from model.encoder import Encoder
from model.positions.rope import apply_rope
from utils.errors import ConfigError

HEADS = ("globalpointer", "efficient")
# finite rather than -inf: exp(NEG - max) is exactly 0 in float32, and nothing becomes NaN
# where a masked score meets a subtraction or a gradient
NEG = -1e12


def span_mask(spannable):
  """spannable [b, n] bool -> [b, 1, n, n]: True where i <= j and both tokens may be in a span."""
  n = spannable.shape[-1]
  upper = np.triu(np.ones((n, n), bool))  # i <= j
  return spannable[:, None, :, None] & spannable[:, None, None, :] & upper


def rope_scores(q, k, *, base: float = 10000.0, layout: str = "interleaved"):
  """q, k [b, n, t, d] -> (R_i q_i).(R_j k_j) / sqrt(d): [b, t, n, n] float32, unmasked."""
  positions = np.arange(q.shape[1])  # static: RoPE's tables become constants
  q = apply_rope(q.astype(jnp.float32), positions, base=base, layout=layout)
  k = apply_rope(k.astype(jnp.float32), positions, base=base, layout=layout)
  return jnp.einsum("bitd,bjtd->btij", q, k) / np.sqrt(q.shape[-1]).astype(np.float32)


class GlobalPointer(nn.Module):
  """h [b, n, D], spannable [b, n] -> span scores [b, num_types, n, n] (NEG off the spans)."""
  num_types: int
  head_size: int = 64
  efficient: bool = False
  rope_base: float = 10000.0

  @nn.compact
  def __call__(self, h, spannable):
    b, n, _ = h.shape
    d, t = self.head_size, self.num_types
    h = h.astype(jnp.float32)
    if self.efficient:
      qk = nn.Dense(2 * d, name="qk")(h)  # [b, n, 2d], shared by every type
      shared = rope_scores(qk[..., None, :d], qk[..., None, d:], base=self.rope_base)
      # halved as in the post: the two biases together have the scale of one
      bias = nn.Dense(2 * t, name="bias")(qk) / 2  # [b, n, 2t]: start biases, then end
      start = jnp.transpose(bias[..., :t], (0, 2, 1))[..., :, None]  # [b, t, n(i), 1]
      end = jnp.transpose(bias[..., t:], (0, 2, 1))[..., None, :]  # [b, t, 1, n(j)]
      scores = shared + start + end
    else:
      qk = nn.Dense(t * 2 * d, name="qk")(h).reshape(b, n, t, 2 * d)
      scores = rope_scores(qk[..., :d], qk[..., d:], base=self.rope_base)
    return jnp.where(span_mask(spannable), scores, NEG)


def check_head(head: str, head_size: int) -> None:
  if head not in HEADS:
    raise ConfigError(f"unknown ner.head {head!r}; valid names: {list(HEADS)}")
  if head_size <= 0 or head_size % 2:
    raise ConfigError(f"ner.head_size must be a positive even number (RoPE rotates pairs), "
                      f"got {head_size}")


class NerModel(nn.Module):
  """Encoder + GlobalPointer head: tokens, valid, spannable [b, n] -> scores [b, types, n, n].

  valid: the tokens attended to; spannable: those that may be in a span (the characters, not
  [CLS] and [SEP]: data/ner.py's spannable). The encoder's parameters are named as
  MlmModel's (`encoder`).
  """
  cfg: ModelConfig
  num_types: int
  head: str = "globalpointer"
  head_size: int = 64

  def setup(self):
    self.encoder = Encoder(self.cfg)
    self.pointer = GlobalPointer(self.num_types, self.head_size,
                                 efficient=self.head == "efficient")

  def __call__(self, tokens, valid, spannable, deterministic: bool = True):
    return self.pointer(self.encoder(tokens, valid, deterministic), spannable)

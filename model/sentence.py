"""Sentence encoder: the Transformer encoder, a pooling, an optional projection.

Poolings and the SimCSE projection: docs/techniques.md section 6.

Parameter names follow MlmModel (`encoder`, and with lm_head `head_dense`, `head_norm`,
`output_bias`), so an MLM checkpoint of this codebase initialises it key for key.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.config import ModelConfig
from model.encoder import Encoder, head_layers, head_logits
from utils.errors import ConfigError


def masked_mean(h, valid):
  """Mean over the valid tokens: h [b, n, D], valid [b, n] -> [b, D]."""
  w = valid.astype(h.dtype)[..., None]
  return jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


# pooling(final hidden states, every block's output, valid) -> [b, D]
POOLINGS = {
    "cls": lambda final, layers, valid: final[:, 0],
    "mean": lambda final, layers, valid: masked_mean(final, valid),
    # BERT-whitening's "first-last-avg": the first block's output (not the embeddings) and
    # the last, averaged, then mean-pooled
    "first_last_mean": lambda final, layers, valid: masked_mean((layers[0] + final) / 2, valid),
}


def get_pooling(name: str):
  if name not in POOLINGS:
    raise ConfigError(f"unknown sentence.pooling {name!r}; valid names: {sorted(POOLINGS)}")
  return POOLINGS[name]


class SentenceEncoder(nn.Module):
  """tokens [b, n], valid [b, n] -> sentence embeddings [b, D].

  projection > 0 adds SimCSE's MLP (dense + tanh) on the pooled vector; `project=False` skips
  it (unsupervised SimCSE evaluates without it). lm_head adds MlmModel's head for SimBERT's
  generation loss (`lm_logits`).
  """
  cfg: ModelConfig
  pooling: str = "cls"
  projection: int = 0
  lm_head: bool = False

  def setup(self):
    cfg = self.cfg
    self.encoder = Encoder(cfg)
    if self.projection:
      self.project = nn.Dense(self.projection, dtype=jnp.dtype(cfg.dtype))
    if self.lm_head:  # the same three pieces (and names) as MlmModel's head
      self.head_dense, self.head_norm = head_layers(cfg)
      self.output_bias = self.param("output_bias", nn.initializers.zeros, (cfg.vocab_size,))

  def __call__(self, tokens, valid, deterministic: bool = True, project: bool = True):
    return self.encode(tokens, valid, deterministic, project=project)[0]

  def encode(self, tokens, valid, deterministic: bool = True, segment_ids=None,
             project: bool = True):
    """(embeddings [b, D], final hidden states [b, n, width])."""
    final, layers = self.encoder(tokens, valid, deterministic, segment_ids=segment_ids,
                                 return_layers=True)
    # pooled in float32: a mean over the tokens is a sum the compute dtype would round
    f32 = lambda h: h.astype(jnp.float32)
    pooled = get_pooling(self.pooling)(f32(final), [f32(h) for h in layers], valid)
    if self.projection and project:
      pooled = jnp.tanh(self.project(pooled))
    return pooled.astype(jnp.float32), final

  def seq2seq(self, tokens, valid, segment_ids, deterministic: bool = True):
    """SimBERT: (embeddings, next-token logits) under the UniLM mask of segment_ids."""
    pooled, final = self.encode(tokens, valid, deterministic, segment_ids=segment_ids)
    return pooled, self.lm_logits(final)

  def decode(self, tokens, at, mask):
    """SimBERT generation (generation/): next-token logits [b, 1, V] of a decoding step of
    tokens [b, 1] at positions at [b, 1] against the key/value cache (Encoder.decode)."""
    return self.lm_logits(self.encoder.decode(tokens, at, mask))

  def lm_logits(self, hidden):
    return head_logits(self.cfg, self.encoder, self.head_dense, self.head_norm,
                       self.output_bias, hidden)

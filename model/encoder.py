"""Transformer encoder (post-LN BERT by default, pre-LN and RMSNorm options) and MLM model."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from model.activations import get_activation
from model.attention import cache
from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig, require_mask
from model.dropout import Dropout
from model.layout import split_by_example, whole
from model.masks import causal_mask, padding_mask, unilm_mask, window_mask
from model.norms import block_norm
from model.positions import checked_terms, get_position
from model.positions.base import term_arrays
from model.remat import remat


class Mlp(nn.Module):
  """dense, activation, dense. No dropout inside: as in BERT and RoFormer, dropout acts on the
  sublayer's output (Block), not on the 4x-wide hidden activation."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    # Tokens as rows of one matrix: XLA:CPU computes the weight gradient of a Dense applied to
    # [b, n, d] (contracting over b and n) by first copying the 4x-wide hidden gradient into a
    # transposed layout; on [b*n, d] it is one product with no copy. Same parameters, same
    # math (benchmarks/mlm_throughput.py measures the difference).
    lead = x.shape[:-1]
    y = nn.Dense(cfg.mlp_dim, dtype=dtype, name="fc1")(x.reshape(-1, x.shape[-1]))
    y = get_activation(cfg.activation)(split_by_example(y))
    return nn.Dense(cfg.width, dtype=dtype, name="fc2")(y).reshape(*lead, cfg.width)


class Block(nn.Module):
  """shared: position terms computed once for every layer (MultiHeadAttention)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool = True, shared=None):
    cfg = self.cfg
    x = split_by_example(x)  # on a mesh: see model/layout.py
    norm = lambda name: block_norm(cfg, name)
    drop = lambda y: Dropout(cfg.dropout)(y, deterministic=deterministic)
    attn = lambda y: MultiHeadAttention(cfg, name="attention")(y, mask, positions, deterministic,
                                                               shared)
    mlp = lambda y: Mlp(cfg, name="mlp")(y)
    if cfg.norm == "post":
      x = norm("attention_norm")(x + drop(attn(x)))
      return norm("mlp_norm")(x + drop(mlp(x)))
    x = x + drop(attn(norm("attention_norm")(x)))
    return x + drop(mlp(norm("mlp_norm")(x)))


class Encoder(nn.Module):
  """tokens [b, n] int, valid [b, n] bool -> hidden states [b, n, width]."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    embed = lambda rows: nn.Embed(rows, cfg.embed_width,
                                  embedding_init=nn.initializers.normal(0.02))
    self.token_embed = embed(cfg.vocab_size)
    # BERT's segment table (model/embeddings.py); one segment, so only its row 0 is used
    self.token_type_embed = embed(cfg.type_vocab_size) if cfg.type_vocab_size else None
    # RoFormer's embeddings_project: embeddings narrower than the model
    self.embed_project = (nn.Dense(cfg.width, dtype=jnp.dtype(cfg.dtype))
                          if cfg.embed_width != cfg.width else None)
    position = get_position(cfg.position)
    self.position_embed = position.absolute(cfg) if position.absolute else None
    # an encoding whose one module serves every layer (T5's table): built here, once
    shared = position.relative is not None and position.shared(cfg)
    self.relative_position = position.relative(cfg) if shared else None
    # post-LN normalises the embeddings (BERT); pre-norm normalises the output instead
    self.final_norm = block_norm(cfg)
    self.dropout = Dropout(cfg.dropout)
    # remat recomputes each block's activations in the backward pass, once the gradient of
    # its output exists (model/remat.py: memory for time); argument 4 (deterministic) is a
    # Python bool, so it must be static. Only arrays cross it, which is why shared position
    # terms travel as a dict of arrays.
    block = remat(Block, static_argnums=(4,)) if cfg.remat else Block
    self.blocks = [block(cfg, name=f"block_{i}") for i in range(cfg.num_layers)]

  def __call__(self, tokens, valid, deterministic: bool = True, mask=None, segment_ids=None,
               return_layers: bool = False):
    """return_layers: also return every block's output (first-last-mean pooling needs them)."""
    cfg = self.cfg
    n = tokens.shape[1]
    # static (numpy): position tables (RoPE's cos/sin, sinusoids) become compile-time constants
    positions = np.arange(n)
    x = self.embed(tokens, positions, deterministic)
    if mask is None:
      mask = padding_mask(valid)
      if cfg.causal:
        mask = mask & causal_mask(n)
      if cfg.window > 0:
        mask = mask & window_mask(n, cfg.window, cfg.causal)
      if segment_ids is not None:  # UniLM: segment A bidirectional, segment B left-to-right
        require_mask(cfg, "any")
        mask = mask & unilm_mask(segment_ids)
    layers = []  # each block's output, for return_layers
    x = self.blocks_and_norm(x, mask, positions, deterministic, self.shared_terms(positions),
                             layers)
    return (x, layers) if return_layers else x

  def embed(self, tokens, positions, deterministic: bool):
    """The blocks' input: token (+ type) (+ absolute position) embeddings, normalised
    (post-LN), dropped out and projected to the width."""
    cfg = self.cfg
    # nn.Embed's lookup, with the table gathered whole first on a mesh (model/layout.py)
    x = jnp.take(whole(self.token_embed.embedding), tokens, axis=0).astype(jnp.dtype(cfg.dtype))
    if self.token_type_embed is not None:  # as BERT: (token + type) + position
      x = x + self.token_type_embed(jnp.zeros((1, 1), jnp.int32)).astype(x.dtype)
    if self.position_embed is not None:
      x = self.position_embed(x, positions)
    if cfg.norm == "post":
      x = self.final_norm(x)
    x = self.dropout(x, deterministic=deterministic)
    if self.embed_project is not None:  # after the norm and dropout, as RoFormer
      x = self.embed_project(x)
    return x

  def shared_terms(self, positions):
    """The terms of a position module that serves every layer (T5's table), or None."""
    if self.relative_position is None:
      return None
    terms = self.relative_position(positions, positions, self.cfg.causal)
    return term_arrays(checked_terms(get_position(self.cfg.position), terms, self.cfg))

  def blocks_and_norm(self, x, mask, positions, deterministic, shared, layers=None):
    """Every block (each output appended to `layers`), then the final norm (pre-norm)."""
    for block in self.blocks:
      x = block(x, mask, positions, deterministic, shared)
      if layers is not None:
        layers.append(x)
    return x if self.cfg.norm == "post" else self.final_norm(x)

  def decode(self, tokens, at, mask):
    """A decoding step (model/attention/cache.py): hidden states [b, 1, width] of tokens
    [b, 1] at positions at [b, 1], attending to the cached slots of mask [b, 1, 1, K]. The
    cache is the 'cache' collection that a forward pass over the K slots filled."""
    embed = lambda t, positions: self.embed(t, positions, True)
    if self.position_embed is None:
      x = embed(tokens, at)
    else:  # the embedding the full pass computes at that position (its static table)
      x = cache.at_slots(embed, tokens, at, mask.shape[-1])
    return self.blocks_and_norm(x, mask, at, True, self.shared_terms(cache.slots(mask)))

  def attend(self, h):
    """Logits against the (tied) token embedding table: the product in the compute dtype,
    accumulated and returned in float32 (the loss's softmax needs float32 logits; a bf16
    product of a vocabulary-wide row would round every logit to 8 bits)."""
    dtype = jnp.dtype(self.cfg.dtype)
    table = self.token_embed.embedding.astype(dtype)
    return jnp.dot(h.astype(dtype), table.T, preferred_element_type=jnp.float32)


def head_layers(cfg: ModelConfig):
  """The MLM head's transform (dense to the embedding width, LayerNorm): the head_dense and
  head_norm of MlmModel and of SentenceEncoder's LM head, so that one checkpoint fits both."""
  dtype = jnp.dtype(cfg.dtype)  # flax norms keep their statistics in float32 regardless
  return (nn.Dense(cfg.embed_width, dtype=dtype),
          nn.LayerNorm(epsilon=cfg.norm_epsilon, dtype=dtype))


def head_logits(cfg: ModelConfig, encoder: Encoder, dense, norm, bias, h):
  """dense, activation, norm, then the tied decoder (the token embedding table) + bias."""
  return encoder.attend(norm(get_activation(cfg.activation)(dense(h)))) + bias


class MlmModel(nn.Module):
  """Encoder + BERT MLM head (dense, activation, norm, tied decoder + bias).

  With `targets_at` [b, P] the head runs only at those positions, which is most of the win
  in training (the vocabulary projection dominates a small model's cost).
  """
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.encoder = Encoder(cfg)
    self.head_dense, self.head_norm = head_layers(cfg)
    self.output_bias = self.param("output_bias", nn.initializers.zeros, (cfg.vocab_size,))

  def __call__(self, tokens, valid, deterministic: bool = True, targets_at=None):
    h = self.encoder(tokens, valid, deterministic)
    if targets_at is not None:
      h = jnp.take_along_axis(h, targets_at[..., None], axis=1)
    return head_logits(self.cfg, self.encoder, self.head_dense, self.head_norm,
                       self.output_bias, h)

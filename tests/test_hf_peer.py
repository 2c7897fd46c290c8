"""Peer check against HuggingFace's Flax RoFormer and BERT (optional extra `hf`).

Same weights copied into both, same inputs, outputs equal to 1e-5:
  * our RoPE attention (rope_layout=interleaved, scale=standard) = FlaxRoFormerSelfAttention;
  * our post-LN block with RoPE = FlaxRoFormerLayer;
  * our post-LN block without relative positions = FlaxBertLayer (BERT's positions are
    absolute, added to the embeddings before the first layer).

Two settings are chosen on HF's side to match ours: layer_norm_eps=1e-6 (flax's LayerNorm
default, which our blocks use; HF defaults to 1e-12) and hidden_act="gelu" (exact erf GELU,
our default). RoFormer's sinusoidal table is sin in the first half and cos in the second, used
pairwise on interleaved channels: the same rotation as our interleaved layout.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
from transformers.models.bert.modeling_flax_bert import FlaxBertLayer  # noqa: E402
from transformers.models.roformer.modeling_flax_roformer import (  # noqa: E402
    FlaxRoFormerLayer, FlaxRoFormerSelfAttention, create_sinusoidal_positions)

from model.attention.layer import MultiHeadAttention  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.encoder import Block  # noqa: E402
from model.masks import padding_mask  # noqa: E402

WIDTH, HEADS, MLP, N = 16, 2, 32, 9
HF = dict(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=HEADS,
          intermediate_size=MLP, hidden_act="gelu", hidden_dropout_prob=0.0,
          attention_probs_dropout_prob=0.0, max_position_embeddings=64, layer_norm_eps=1e-6)


def _ours(position):
  return ModelConfig.from_dict(dict(vocab_size=50, width=WIDTH, num_heads=HEADS, num_layers=1,
                                    mlp_dim=MLP, dropout=0.0, position=position,
                                    rope_layout="interleaved", scale="standard", norm="post",
                                    activation="gelu"))


def _inputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, N, WIDTH))
  valid = jnp.arange(N)[None] < jnp.array([[N], [6]])  # second sequence padded after 6
  return x, valid


def _heads(dense):
  """HF's Dense over the flat width -> our DenseGeneral over (heads, head_dim)."""
  d = WIDTH // HEADS
  return {"kernel": dense["kernel"].reshape(WIDTH, HEADS, d), "bias": dense["bias"].reshape(HEADS, d)}


def _block_params(hf):
  """HF's BERT/RoFormer layer parameters (the two share names) in our Block's tree."""
  a = hf["attention"]
  out = a["output"]["dense"]
  return {
      "attention": {**{name: _heads(a["self"][name]) for name in ("query", "key", "value")},
                    "out": {"kernel": out["kernel"].reshape(HEADS, WIDTH // HEADS, WIDTH),
                            "bias": out["bias"]}},
      "attention_norm": a["output"]["LayerNorm"],
      "mlp": {"fc1": hf["intermediate"]["dense"], "fc2": hf["output"]["dense"]},
      "mlp_norm": hf["output"]["LayerNorm"],
  }


def _same_tree(ours, params):
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(params)):
    assert a.shape == b.shape


def test_rope_attention_matches_roformer_self_attention():
  config = transformers.RoFormerConfig(**HF)
  hf = FlaxRoFormerSelfAttention(config)
  x, valid = _inputs()
  sin_pos = create_sinusoidal_positions(64, WIDTH // HEADS)[:N]
  hf_params = jax.jit(hf.init)(jax.random.PRNGKey(1), x, valid.astype(jnp.int32), sin_pos, None)
  want = jax.jit(hf.apply)(hf_params, x, valid.astype(jnp.int32), sin_pos, None)[0]
  p = hf_params["params"]
  # HF's self-attention stops before the output projection: make ours the identity
  params = {name: _heads(p[name]) for name in ("query", "key", "value")}
  params["out"] = {"kernel": jnp.eye(WIDTH).reshape(HEADS, WIDTH // HEADS, WIDTH),
                   "bias": jnp.zeros(WIDTH)}
  layer = MultiHeadAttention(_ours("rope"))
  mask = padding_mask(valid)
  _same_tree(jax.eval_shape(layer.init, jax.random.PRNGKey(0), x, mask, jnp.arange(N)),
             {"params": params})
  got = jax.jit(layer.apply)({"params": params}, x, mask, jnp.arange(N))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("peer", ["roformer", "bert"])
def test_post_ln_block_matches_hf_layer(peer):
  x, valid = _inputs()
  mask = valid.astype(jnp.int32)
  if peer == "roformer":
    hf, position = FlaxRoFormerLayer(transformers.RoFormerConfig(**HF)), "rope"
    args = (x, mask, create_sinusoidal_positions(64, WIDTH // HEADS)[:N], None)
  else:
    hf, position = FlaxBertLayer(transformers.BertConfig(**HF)), "none"
    args = (x, mask, None)
  hf_params = jax.jit(hf.init)(jax.random.PRNGKey(1), *args)
  want = jax.jit(hf.apply)(hf_params, *args)[0]
  block = Block(_ours(position))
  params = {"params": _block_params(hf_params["params"])}
  _same_tree(jax.eval_shape(block.init, jax.random.PRNGKey(0), x, padding_mask(valid),
                            jnp.arange(N)), params)
  got = jax.jit(block.apply)(params, x, padding_mask(valid), jnp.arange(N))
  # padded positions included: both attend only to real keys
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

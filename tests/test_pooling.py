"""Sentence pooling (model/sentence.py) against numpy on known hidden states."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.encoder import Encoder
from model.sentence import POOLINGS, SentenceEncoder, get_pooling, masked_mean
from utils.errors import ConfigError

# two sentences of 3 positions, width 2; the second has one padded position
FINAL = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]],
                  [[-1.0, 0.0], [1.0, 2.0], [100.0, 100.0]]], np.float32)
FIRST = np.array([[[3.0, 0.0], [1.0, 0.0], [2.0, 3.0]],
                  [[1.0, 4.0], [5.0, 0.0], [-50.0, 7.0]]], np.float32)
VALID = np.array([[True, True, True], [True, True, False]])


@pytest.mark.parametrize("name, want", [
    ("cls", [[1.0, 2.0], [-1.0, 0.0]]),
    # row 0: (1 + 3 + 5) / 3, (2 + 4 + 9) / 3; row 1 without its padded position
    ("mean", [[3.0, 5.0], [0.0, 1.0]]),
    # (first + final) / 2 at each valid position, then their mean: row 0 (15 / 6, 18 / 6),
    # row 1 (6 / 4, 6 / 4)
    ("first_last_mean", [[2.5, 3.0], [1.5, 1.5]]),
])
def test_poolings_by_hand(name, want):
  # layers: every block's output, the first block's first; a middle block must not count
  layers = [jnp.asarray(FIRST), jnp.full(FINAL.shape, 1e3), jnp.asarray(FINAL)]
  got = get_pooling(name)(jnp.asarray(FINAL), layers, jnp.asarray(VALID))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_masked_mean_of_an_empty_row_is_zero_not_nan():
  got = masked_mean(jnp.ones((1, 3, 2)), jnp.zeros((1, 3), bool))
  np.testing.assert_array_equal(got, np.zeros((1, 2)))


def test_unknown_pooling_lists_the_valid_names():
  assert sorted(POOLINGS) == ["cls", "first_last_mean", "mean"]
  with pytest.raises(ConfigError, match="valid names"):
    get_pooling("max")


def test_sentence_encoder_pools_its_own_hidden_states():
  cfg = ModelConfig.from_dict(dict(vocab_size=30, width=8, num_layers=2, num_heads=2,
                                   mlp_dim=16, dropout=0.0))
  tokens = jnp.array([[2, 7, 9, 11, 3], [2, 12, 3, 0, 0]])
  valid = tokens != 0
  # parameters of the right shapes from a normal: no compiled init needed
  shapes = jax.eval_shape(SentenceEncoder(cfg).init, jax.random.PRNGKey(0), tokens, valid)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype),
                                  shapes["params"])
  enc = params["encoder"]
  one = {k: enc[k] for k in enc if not k.startswith("block_") or k == "block_0"}

  @jax.jit
  def run(params, one):
    pooled = {}
    for name in POOLINGS:
      pooled[name], final = SentenceEncoder(cfg, pooling=name).apply(
          {"params": params}, tokens, valid, method=SentenceEncoder.encode)
    # the first block's output, from a one-block encoder with the same embedding and block_0
    # (post-LN: an encoder's output is its last block's output)
    first = Encoder(dataclasses.replace(cfg, num_layers=1)).apply({"params": one}, tokens, valid)
    return pooled, final, first

  pooled, final, first = run(params, one)
  final, first = np.asarray(final, np.float64), np.asarray(first, np.float64)
  v = np.asarray(valid, np.float64)[..., None]
  np.testing.assert_allclose(pooled["cls"], final[:, 0], rtol=1e-6)
  np.testing.assert_allclose(pooled["mean"], (final * v).sum(1) / v.sum(1), rtol=1e-5)
  want = (((first + final) / 2) * v).sum(1) / v.sum(1)
  np.testing.assert_allclose(pooled["first_last_mean"], want, rtol=1e-5, atol=1e-6)

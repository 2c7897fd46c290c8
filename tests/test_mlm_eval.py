"""MLM evaluation (objectives/mlm.py, evaluation/mlm_by_length.py) against the right numbers.

Every length table comes from evaluate_lengths, so its sums are checked against cases where the
right accuracy and loss are known without running the code under test: a hand-counted case
(constant logits, sequences whose every maskable token is the same) and a numpy recomputation
on a real MlmModel whose parameters make the logits a known vector.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data.mlm import mlm_mask
from data.tokenizers import PAD, SEP
from evaluation.mlm_by_length import evaluate_lengths
from model.config import ModelConfig
from model.encoder import MlmModel
from objectives.mlm import mlm_loss

V = 10  # tokens 0-4 are the special ones, 5-9 ordinary
# log-probabilities 1/2, 1/4, 1/8, 1/8 on tokens 5, 7, 8, 9; every other token ~0
LOG_P = np.full(V, -1e9, np.float32)
LOG_P[[5, 7, 8, 9]] = np.log([0.5, 0.25, 0.125, 0.125])


class ConstantLogits:
  """A stand-in model: the same logits (params['bias']) at every predicted position."""

  def apply(self, variables, tokens, valid, deterministic=True, targets_at=None):
    assert deterministic and targets_at is not None
    b, p = targets_at.shape
    return jnp.broadcast_to(variables["params"]["bias"], (b, p, V))


def test_mlm_loss_weighted_sums_by_hand():
  # two rows, three predictions each; the weight-0 prediction (token 5, which the argmax
  # would get right) must not count
  logits = jnp.asarray(np.broadcast_to(LOG_P, (2, 3, V)))
  targets = jnp.array([[5, 7, 9], [5, 8, 5]])
  weights = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  loss, sums = mlm_loss(logits, targets, weights)
  # -log p: 1, 2, 3 bits for row 0; 1, 3 bits for row 1 (its last has weight 0)
  assert float(sums["count"]) == 5.0
  assert float(sums["correct"]) == 2.0  # argmax is token 5
  np.testing.assert_allclose(float(sums["loss_sum"]), 10 * math.log(2), rtol=1e-6)
  np.testing.assert_allclose(float(loss), 2 * math.log(2), rtol=1e-6)


def test_evaluate_lengths_hand_counted_with_a_padded_last_batch():
  n = 8  # rate 0.25: 2 predictions per sequence
  rows = [[5] * n, [7] * n, [8] + [SEP] * (n - 1), [5] * n, [9] * n]
  # 3 trailing tokens: less than one sequence, not scored
  stream = np.array(sum(rows, []) + [6, 6, 6], np.int32)
  out = evaluate_lengths(ConstantLogits(), {"bias": jnp.asarray(LOG_P)}, stream, [n],
                         vocab_size=V, mask_rate=0.25, max_tokens=1000, batch_tokens=16, seed=3)
  # 5 sequences in batches of 2: [r0 r1] [r2 r3] [r4 pad]. Predictions: 2 per row except r2,
  # which has one maskable token (its second pick falls on [SEP], weight 0), none in the pad.
  # Correct: the 4 predictions of token 5 (rows 0, 3). Bits: 1 per 5, 2 per 7, 3 per 8 or 9.
  bits = 4 * 1 + 2 * 2 + 1 * 3 + 2 * 3
  assert out == {n: pytest.approx({"accuracy": 4 / 9, "loss": bits * math.log(2) / 9,
                                   "predictions": 9, "sequences": 5}, rel=1e-6)}
  assert isinstance(out[n]["predictions"], int) and isinstance(out[n]["sequences"], int)


def _zero_but_output_bias(model, bias):
  """MlmModel parameters with every leaf zero except output_bias: the logits are `bias` at
  every position (zero embeddings and head give zero hidden states, zero against the table)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32),
                          jnp.ones((1, 8), bool))["params"]
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return dict(zeros, output_bias=jnp.asarray(bias))


def _keys_of_batches(seed, n, num_batches):
  # the documented rule: masking key fixed by (eval seed, length), one fold per batch index
  key = jax.random.fold_in(jax.random.PRNGKey(seed), n)
  return [jax.random.fold_in(key, i) for i in range(num_batches)]


def _numpy_reference(stream, n, bias, *, max_tokens, batch_tokens, seed, rate):
  """Accuracy, loss, counts written out in numpy from the masks of data.mlm.mlm_mask."""
  num = min(len(stream) // n, max(1, max_tokens // n))
  seqs = stream[:num * n].reshape(num, n)
  bs = max(1, min(num, batch_tokens // n))
  batches = -(-num // bs)
  padded = np.full((batches * bs, n), PAD, np.int32)
  padded[:num] = seqs
  log_p = bias - (bias.max() + np.log(np.exp(bias - bias.max()).sum()))
  correct = loss_sum = count = 0.0
  mask = jax.jit(functools.partial(mlm_mask, vocab_size=len(bias), rate=rate))
  for i, key in enumerate(_keys_of_batches(seed, n, batches)):
    _, _, targets, weights = mask(key, jnp.asarray(padded[i * bs:(i + 1) * bs]))
    targets, weights = np.asarray(targets), np.asarray(weights, np.float64)
    count += weights.sum()
    correct += (weights * (targets == bias.argmax())).sum()
    loss_sum += (weights * -log_p[targets]).sum()
  return {"accuracy": correct / count, "loss": loss_sum / count, "predictions": int(count),
          "sequences": num}


def test_evaluate_lengths_of_an_mlm_model_equals_numpy():
  cfg = ModelConfig.from_dict(dict(vocab_size=V, width=8, num_layers=1, num_heads=2, mlp_dim=16,
                                   dropout=0.0))
  model = MlmModel(cfg)
  bias = np.array([0, 0, 0, 0, 0, 2.0, 1.0, 0.5, -1.0, 0.25], np.float32)
  # ordinary tokens with a [SEP] every 7: the masks pick among fewer maskable tokens
  stream = np.random.default_rng(0).integers(5, V, 150).astype(np.int32)
  stream[::7] = SEP
  kw = dict(max_tokens=100, batch_tokens=40, seed=11)
  out = evaluate_lengths(model, _zero_but_output_bias(model, bias), stream, [8],
                         vocab_size=V, mask_rate=0.15, **kw)
  want = _numpy_reference(stream, 8, bias.astype(np.float64), rate=0.15, **kw)
  # 100 // 8 = 12 sequences in batches of 5 (the third padded with 3 empty rows),
  # round(0.15 * 8) = 1 prediction each
  assert (want["sequences"], want["predictions"]) == (12, 12)
  assert out == {8: pytest.approx(want, rel=1e-5)}

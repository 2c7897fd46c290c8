"""SimBERT's generation loss (training/contrastive.make_embed): position t predicts token t + 1,
for the tokens of segment B only, averaged over the two orderings; checked by hand."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data.tokenizers import CLS, PAD, SEP
from training.contrastive import make_embed

V = 22
# confidence in the next token at each position: e^w / (21 + e^w) = 1/2, 1/4, 1/8 for
# e^w = 21, 7, 3; e^w = 1 elsewhere (probability 1/22)
P_NEXT = {3: 1 / 2, 4: 1 / 4, 5: 1 / 8, 6: 1 / 2}
W = np.zeros(9, np.float32)
for t, p in P_NEXT.items():
  W[t] = math.log(21 * p / (1 - p))


class NextTokenModel:
  """A stand-in SentenceEncoder: at position t it gives the input's token t + 1 the logit
  params['w'][t] and every other token 0, whatever the segments; its embedding is zero."""

  def apply(self, variables, tokens, valid, segments=None, *, deterministic, rngs, method=None):
    nxt = jnp.roll(tokens, -1, axis=1)  # the last position's "next" is never a target
    logits = variables["params"]["w"][None, :, None] * jax.nn.one_hot(nxt, V)
    return jnp.zeros((tokens.shape[0], 2)), logits


A, B = [7, 8], [10, 11, 12]
# [CLS] a [SEP] b [SEP] [PAD] and [CLS] b [SEP] a [SEP] [PAD]: segment B is the second sentence
# and its [SEP]; padding is segment 0, as data/sts.encode_seq2seq writes it
AB = [CLS, *A, SEP, *B, SEP, PAD]
SEG_AB = [0, 0, 0, 0, 1, 1, 1, 1, 0]
BA = [CLS, *B, SEP, *A, SEP, PAD]
SEG_BA = [0, 0, 0, 0, 0, 1, 1, 1, 0]


def _aux(weight, examples=1):
  batch = {"tokens": jnp.array([[AB, BA]] * examples, jnp.int32),
           "segments": jnp.array([[SEG_AB, SEG_BA]] * examples, jnp.int32)}
  keys = jax.random.split(jax.random.PRNGKey(0), examples)
  embed = jax.jit(make_embed(NextTokenModel(), "simbert", weight))
  h, aux = embed({"w": jnp.asarray(W)}, batch, keys)
  assert h.shape == (examples, 2, 2)
  return float(aux)


def test_generation_loss_by_hand():
  # AB: targets b1 b2 b3 [SEP] (positions 4-7) predicted at positions 3-6: -log2 p = 1, 2, 3, 1
  # bits, mean 7/4. BA: targets a1 a2 [SEP] (5-7) predicted at 4-6: 2, 3, 1 bits, mean 2.
  # Per example the mean of the two orderings, 15/8 bits; summed over examples.
  assert _aux(1.0) == pytest.approx(15 / 8 * math.log(2), rel=1e-6)
  assert _aux(0.5, examples=3) == pytest.approx(0.5 * 3 * 15 / 8 * math.log(2), rel=1e-6)


"""Decoding strategies (generation/strategies.py, generation/beam.py) against independent
computations: greedy = beam width 1 = top-k 1 sampling; the nucleus and the sampled
frequencies of top-p sampling; beam search finding the best sequence of a hand-made model
where greedy does not; beam scores of the real model with its cache equal to the full pass's
(the model with a cache is greedy = beam width 1 as well: the loops only see its logits)."""
from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data.tokenizers import CLS, PAD, SEP
from generation import seq2seq
from generation.beam import beam_search
from generation.strategies import BANNED, Strategy, decode, filtered_logits, nucleus_mask
from model.config import ModelConfig
from model.sentence import SentenceEncoder

X, Y, Z = 5, 6, 7
V = 8
LOW = -30.0  # the log-probability of what a hand-made table never does


def bigram_step(table):
  """A model whose next-token logits depend on the last token only: state = the last token."""
  return lambda tokens, state: (table[tokens], tokens)


@functools.partial(jax.jit, static_argnames=("strategy", "max_new"))
def _decode(table, first, key, strategy, max_new):
  state = jnp.zeros(first.shape[0], jnp.int32)
  if strategy.name == "beam":
    w = strategy.width
    tokens, scores = beam_search(bigram_step(table), jnp.repeat(first, w, axis=0),
                                 jnp.repeat(state, w), max_new=max_new, width=w)
    return tokens[:, 0], scores
  return decode(bigram_step(table), first, state, key, max_new=max_new, strategy=strategy), None


def run(table, first, strategy, max_new=5, seed=0):
  """Decode from the `first` logits [B, V] of a bigram table with the given strategy: (tokens
  [B, max_new], and for beam search the scores [B, W])."""
  tokens, scores = _decode(jnp.asarray(table, jnp.float32), jnp.asarray(first, jnp.float32),
                           jax.random.PRNGKey(seed), strategy, max_new)
  return np.asarray(tokens), None if scores is None else np.asarray(scores)


def hand_made():
  """Greedy takes x (0.55) then z (0.5) then [SEP] (0.9): mean log p -0.465. y (0.45) then [SEP]
  (0.95) has the best mean log p, -0.425, which beam search of width 2 finds."""
  table = np.full((V, V), LOW)
  for row, probs in {X: {Z: 0.5, SEP: 0.3, X: 0.1, Y: 0.1}, Y: {SEP: 0.95, X: 0.05},
                     Z: {SEP: 0.9, Z: 0.1}}.items():
    for token, p in probs.items():
      table[row, token] = math.log(p)
  first = np.full((1, V), LOW)
  first[0, X], first[0, Y] = math.log(0.55), math.log(0.45)
  return table, first


def log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max() - np.log(np.exp(x - x.max()).sum())


def brute_force_best(table, first, max_new):
  """The best length-normalised sequence by enumeration: every sequence of the non-banned
  tokens that ends at its first [SEP] or at max_new tokens."""
  tokens = [t for t in range(V) if t not in BANNED]
  best = (-np.inf, None)
  for n in range(1, max_new + 1):
    for seq in itertools.product(tokens, repeat=n):
      if SEP in seq[:-1] or (n < max_new and seq[-1] != SEP):
        continue
      logits = [first[0]] + [table[t] for t in seq[:-1]]
      total = sum(log_softmax(np.where(np.isin(np.arange(V), BANNED), -np.inf, l))[t]
                  for l, t in zip(logits, seq))
      best = max(best, (total / n, seq))
  return best


def test_beam_search_finds_the_best_sequence_where_greedy_does_not():
  table, first = hand_made()
  score, best = brute_force_best(table, first, max_new=4)
  assert best == (Y, SEP) and score == pytest.approx((math.log(0.45) + math.log(0.95)) / 2)
  greedy, _ = run(table, first, Strategy("greedy"), max_new=4)
  assert list(greedy[0]) == [X, Z, SEP, PAD]
  tokens, scores = run(table, first, Strategy("beam", width=2), max_new=4)
  assert list(tokens[0]) == [Y, SEP, PAD, PAD]
  assert scores[0, 0] == pytest.approx(score, abs=1e-5)
  # the second-best hypothesis is greedy's, with its own mean log-probability
  assert scores[0, 1] == pytest.approx((math.log(0.55 * 0.5 * 0.9)) / 3, abs=1e-5)


def test_greedy_equals_beam_width_one_and_top_k_one_sampling():
  rng = np.random.default_rng(0)
  table = rng.normal(0, 2, (V, V))
  first = rng.normal(0, 2, (6, V))
  table[:, SEP] -= 1.0  # so that some sequences end before max_new, some do not
  greedy, _ = run(table, first, Strategy("greedy"), max_new=6)
  ended = [(row == SEP).any() for row in greedy]
  assert any(ended) and not all(ended)
  beam, _ = run(table, first, Strategy("beam", width=1), max_new=6)
  np.testing.assert_array_equal(beam, greedy)
  for seed in range(3):
    sampled, _ = run(table, first, Strategy("sample", top_k=1, temperature=0.7), max_new=6,
                     seed=seed)
    np.testing.assert_array_equal(sampled, greedy)
  # and greedy is the argmax at every step, never a banned token
  for row, start in zip(greedy, first):
    logits = start
    for token in row:
      if token == PAD:
        break
      allowed = np.where(np.isin(np.arange(V), BANNED), -np.inf, logits)
      assert token == np.argmax(allowed)
      logits = table[token]


def nucleus_by_hand(probs, top_p):
  """The smallest set of most probable tokens whose total reaches top_p (numpy, float64)."""
  order = sorted(range(len(probs)), key=lambda t: (-probs[t], t))
  kept, total = set(), 0.0
  for t in order:
    kept.add(t)
    total += probs[t]
    if total >= top_p:
      break
  return kept


def test_nucleus_matches_an_independent_computation():
  rng = np.random.default_rng(1)
  for trial in range(40):
    logits = rng.normal(0, 1 + trial % 4, 12)
    top_p = float(rng.uniform(0.05, 0.99))
    probs = np.exp(log_softmax(logits))
    mask = np.asarray(nucleus_mask(jnp.asarray(logits, jnp.float32), top_p))
    expected = nucleus_by_hand(probs, top_p)
    # the one token whose inclusion is decided by rounding of the cumulative sum may differ
    assert set(np.flatnonzero(mask)) == expected or abs(
        sum(probs[list(expected)]) - probs[sorted(expected, key=lambda t: probs[t])[0]]
        - top_p) < 1e-6


@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.75), (2.0, 0.6)])
def test_top_p_sampling_stays_in_the_nucleus_with_its_renormalised_frequencies(temperature,
                                                                               top_p):
  logits = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
  probs = np.exp(log_softmax(logits / temperature))
  nucleus = sorted(nucleus_by_hand(probs, top_p))
  expected = np.zeros_like(probs)
  expected[nucleus] = probs[nucleus] / probs[nucleus].sum()
  assert 1 < len(nucleus) < len(probs)
  n = 20000
  filtered = filtered_logits(jnp.asarray(logits, jnp.float32), temperature, top_p=top_p)
  draws = np.asarray(jax.random.categorical(jax.random.PRNGKey(0), filtered, shape=(n,)))
  assert set(np.unique(draws)) <= set(nucleus)
  frequencies = np.bincount(draws, minlength=len(probs)) / n
  # 5 standard deviations of a frequency from n draws
  tolerance = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9
  assert np.all(np.abs(frequencies - expected) <= tolerance), (frequencies, expected)


def test_top_k_keeps_the_k_most_probable():
  logits = jnp.asarray([0.3, 2.0, -1.0, 1.5, 0.9])
  kept = np.isfinite(np.asarray(filtered_logits(logits, top_k=2)))
  assert list(np.flatnonzero(kept)) == [1, 3]


def test_beam_scores_of_the_cached_model_are_its_full_pass_log_probabilities():
  """Beam search on a random SentenceEncoder (learned absolute positions, whose embedding a
  step takes at its position): the beams' caches are reordered as beams are chosen; each
  returned hypothesis's score must equal its mean log-probability under full forward passes."""
  vocab, n_a, max_new, width = 16, 6, 5, 3
  cfg = ModelConfig.from_dict(dict(vocab_size=vocab, width=16, num_layers=1, num_heads=2,
                                   mlp_dim=32, dropout=0.0, position="learned",
                                   max_len=n_a + max_new))
  model = SentenceEncoder(cfg, lm_head=True)
  slots = n_a + max_new
  zeros = jnp.zeros((1, slots), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), zeros, zeros == 0, zeros,
                                             method=SentenceEncoder.seq2seq)["params"])
  # random parameters of order 1 (logits of order 1), with [SEP] often likely
  rng = np.random.default_rng(3)
  params = jax.tree_util.tree_map(lambda s: rng.normal(0, 0.7, s.shape).astype(np.float32),
                                  shapes)
  params["output_bias"][SEP] += 0.5
  tokens = np.full((2, n_a), PAD, np.int32)
  tokens[0, :4] = [CLS, 9, 11, SEP]
  tokens[1, :6] = [CLS, 7, 8, 12, 10, SEP]
  lengths = np.array([4, 6], np.int32)
  run = seq2seq.generator(model, max_new=max_new, strategy=Strategy("beam", width=width),
                          copies=width)
  out, scores = (np.asarray(x) for x in run(params, tokens, lengths, jax.random.PRNGKey(0)))
  full = jax.jit(lambda seq, seg: model.apply({"params": params}, seq, seq != PAD, seg,
                                              method=SentenceEncoder.seq2seq)[1])
  for i, n in enumerate(lengths):
    for hypothesis, score in zip(out[i], scores[i]):
      b = seq2seq.until_sep(hypothesis)
      ended = len(b) < max_new or hypothesis[-1] == SEP
      targets = b + [SEP] if ended else b
      seq = np.full((1, slots), PAD, np.int32)
      seg = np.zeros_like(seq)
      seq[0, :n] = tokens[i, :n]
      seq[0, n:n + len(targets)] = targets
      seg[0, n:n + len(targets)] = 1
      logits = np.asarray(full(seq, seg))[0]
      logp = [log_softmax(np.where(np.isin(np.arange(vocab), BANNED), -np.inf,
                                   logits[n - 1 + j]))[t] for j, t in enumerate(targets)]
      assert score == pytest.approx(np.sum(logp) / len(targets), abs=1e-4)
    assert list(scores[i]) == sorted(scores[i], reverse=True)

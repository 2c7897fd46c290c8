"""Decoding with the key/value cache (model/attention/cache.py, generation/seq2seq.py) equals
the full forward pass: at every step the next-token logits from the cache equal those of a
full UniLM forward pass of the same prefix ([CLS] a [SEP] b_1 .. b_j, padded), per sequence,
for prompts of different lengths in one batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import contrastive_batch
from data.tokenizers import CLS, PAD, SEP
from generation import seq2seq
from model.attention.cache import decoding_refusal
from model.config import ModelConfig
from model.sentence import SentenceEncoder
from utils.errors import UserError

V, N_A, MAX_NEW = 24, 7, 6
SLOTS = N_A + MAX_NEW
LENGTHS = np.array([4, 7, 5], np.int32)  # prompt lengths [CLS] a [SEP], padded to N_A


def _model(**fields):
  """The contrastive config's model section (rope, scale=logn) at a tiny size, with fields."""
  section = contrastive_batch.get_config("smoke").model.to_dict()
  section.update(width=16, num_heads=2, mlp_dim=32, dropout=0.0, **fields)
  cfg = ModelConfig.for_run(section, vocab_size=V, train_length=SLOTS)
  return SentenceEncoder(cfg, lm_head=True)


def _init(model):
  """The shapes of model.init's variables (traced, not run)."""
  zeros = jnp.zeros((1, SLOTS), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), zeros, zeros == 0, zeros,
                                           method=SentenceEncoder.seq2seq))


def _params(model, seed=0):
  """Every parameter drawn from N(0, 0.5) (numpy, nothing to compile): logits of order 1, not
  the ~0.1 of the initialisation, so that a 1e-5 tolerance means something."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.normal(0, 0.5, s.shape).astype(np.float32),
                                _init(model)["params"])


def _prompts_and_continuations(seed=0):
  rng = np.random.default_rng(seed)
  tokens = np.full((len(LENGTHS), N_A), PAD, np.int32)
  for i, n in enumerate(LENGTHS):
    tokens[i, :n] = [CLS, *rng.integers(5, V, n - 2), SEP]
  return tokens, rng.integers(5, V, (len(LENGTHS), MAX_NEW - 1)).astype(np.int32)


def _prefix(tokens, b, j):
  """The full pass's input of prefix j: [CLS] a [SEP] b_1 .. b_j padded to SLOTS, and its
  segment ids (1 on b)."""
  seq = np.full((len(tokens), SLOTS), PAD, np.int32)
  seg = np.zeros_like(seq)
  for i, n in enumerate(LENGTHS):
    seq[i, :n] = tokens[i, :n]
    seq[i, n:n + j] = b[i, :j]
    seg[i, n:n + j] = 1
  return seq, seg


def cached_and_full_logits(model, params, tokens, b):
  """(cached [J, N, V], full [J, N, V]): the next-token logits after each prefix j = 0 .. J-1,
  by the cache and by full forward passes; one compilation."""
  model = seq2seq.decoding_model(model)
  prefixes = [_prefix(tokens, b, j) for j in range(MAX_NEW)]
  seqs = np.stack([p[0] for p in prefixes])
  segs = np.stack([p[1] for p in prefixes])
  rows = np.arange(len(LENGTHS))

  @jax.jit
  def both(params):
    first, cache = seq2seq.prefill(model, params, tokens, LENGTHS, SLOTS)
    step = seq2seq.make_step(model, params, SLOTS)

    def feed(state, token):
      logits, state = step(token, state)
      return state, logits

    _, later = jax.lax.scan(feed, (cache, jnp.asarray(LENGTHS)[:, None]), b.T)
    cached = jnp.concatenate([first[None], later])

    def full(seq, seg):  # the logits at the position before prefix j's next token
      logits = model.apply({"params": params}, seq, seq != PAD, seg,
                           method=SentenceEncoder.seq2seq)[1]
      return logits

    full_logits = jax.lax.map(lambda a: full(*a), (seqs, segs))
    at = LENGTHS[None, :] - 1 + np.arange(MAX_NEW)[:, None]  # [J, N]
    return cached, full_logits[np.arange(MAX_NEW)[:, None], rows[None, :], at]

  return [np.asarray(x) for x in both(params)]


@pytest.mark.parametrize("fields", [
    {},  # the contrastive config's model: rope, scale=logn
    # a bias (one table for every layer), a window mask, pre-norm, one block (a second is
    # what the first case checks); absolute positions: test_generation_strategies' beam test
    {"position": "t5", "window": 4, "norm": "pre", "scale": "standard", "num_layers": 1},
], ids=["rope-logn", "t5-window-prenorm"])
def test_cached_logits_equal_the_full_forward_pass_at_every_step(fields):
  model = _model(**fields)
  tokens, b = _prompts_and_continuations()
  cached, full = cached_and_full_logits(model, _params(model), tokens, b)
  assert np.abs(full).max() > 1.0  # logits of order 1: the tolerance is not vacuous
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
  # and the check can fail: the cache of another model's parameters does not match
  other, _ = cached_and_full_logits(model, _params(model, seed=7), tokens, b)
  assert np.abs(other - full).max() > 1e-2


def test_initialisation_leaves_no_cache():
  assert set(_init(_model())) == {"params"}


@pytest.mark.parametrize("fields, words", [
    ({"position": "shaw"}, "position=shaw cannot decode with a key/value cache: its "
     "content_logits"),
    ({"position": "rope", "rope_scaling": "rerope"}, "position=rope with rope_scaling=rerope "
     "cannot decode with a key/value cache: its qk_logits"),
    ({"attention": "linear"}, "attention=linear cannot decode with a key/value cache"),
    ({"attention": "synthesizer_dense", "position": "none"},
     "attention=synthesizer_dense cannot decode"),
])
def test_what_the_cache_cannot_express_is_refused_in_one_line(fields, words):
  section = dict(vocab_size=V, **fields)
  refusal = decoding_refusal(ModelConfig.from_dict(section))
  assert refusal.startswith(words) and "\n" not in refusal
  # each names what can decode
  assert ("positions that can:" in refusal and "rope" in refusal.split("can:")[1]
          or "only attention=softmax" in refusal)
  model = SentenceEncoder(ModelConfig.from_dict(section), lm_head=True)
  with pytest.raises(UserError, match="cannot decode"):
    seq2seq.check_decodable(model, SLOTS)


def test_a_run_without_lm_head_or_past_the_length_bound_is_refused():
  with pytest.raises(UserError, match="trained with data.signal=simbert"):
    seq2seq.check_decodable(SentenceEncoder(_model().cfg), SLOTS)
  learned = _model(position="learned", max_len=SLOTS - 1)
  with pytest.raises(UserError, match=f"need {SLOTS} positions, and this model encodes at most "
                     f"{SLOTS - 1}"):
    seq2seq.check_decodable(learned, SLOTS)
  for variant in ("rope", "alibi", "kerple", "none", "sinusoidal"):
    assert decoding_refusal(ModelConfig.from_dict(dict(vocab_size=V, position=variant))) is None

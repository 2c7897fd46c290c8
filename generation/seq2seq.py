"""SimBERT / UniLM generation: segment B decoded from segment A with a key/value cache.

The prompt [CLS] a [SEP] is segment A; under the UniLM mask A attends only to A, so one
forward pass over the prompt's slots fills the cache (model/attention/cache.py) and gives the
logits of B's first token at A's last position (the training target convention: position t
predicts token t + 1). Each step then feeds one token of B at the next position, which attends
to A and to the tokens of B before it. Prompts of different lengths share a batch: each
sequence has its own position `at`, and slot s of the cache holds position s.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from data.tokenizers import CLS, PAD, SEP
from generation.beam import beam_search
from generation.strategies import Strategy, decode
from model.attention.cache import decoding_refusal, step_mask
from model.sentence import SentenceEncoder
from utils.errors import UserError


def prompt_length(max_len: int) -> int:
  """Tokens of a prompt [CLS] a [SEP] for a model trained on pairs of max_len tokens: a keeps
  at most (max_len - 3) // 2 tokens, as data/sts.encode_seq2seq truncates it in training."""
  return (max_len - 3) // 2 + 2


def encode_prompts(tokenizer, sentences, length: int):
  """([CLS] a [SEP] padded to `length` [N, length] int32, their lengths [N] int32)."""
  tokens = np.full((len(sentences), length), PAD, np.int32)
  lengths = np.zeros(len(sentences), np.int32)
  for i, s in enumerate(sentences):
    ids = [CLS] + tokenizer.encode(s)[:length - 2] + [SEP]
    tokens[i, :len(ids)] = ids
    lengths[i] = len(ids)
  return tokens, lengths


def check_decodable(model: SentenceEncoder, num_slots: int) -> None:
  """Refuse (one line) a model the cache cannot decode, or a sequence longer than it encodes."""
  if not model.lm_head:
    raise UserError("this sentence encoder has no language-model head: generation needs a run "
                    "trained with data.signal=simbert")
  refusal = decoding_refusal(model.cfg)
  if refusal:
    raise UserError(refusal)
  bound = model.cfg.max_length()
  if bound is not None and num_slots > bound:
    raise UserError(f"a prompt and max_new tokens need {num_slots} positions, and this model "
                    f"encodes at most {bound}; use a smaller max_new")


def decoding_model(model: SentenceEncoder) -> SentenceEncoder:
  """The same parameters without remat (no gradients here) or dropout."""
  return model.clone(cfg=dataclasses.replace(model.cfg, remat=False, dropout=0.0,
                                             attention_dropout=0.0))


def prefill(model: SentenceEncoder, params, tokens, lengths, num_slots: int):
  """(the first token's logits [N, V], the cache) of prompts tokens [N, n] of `lengths` [N],
  in a cache of num_slots >= n slots."""
  wide = jnp.pad(tokens, ((0, 0), (0, num_slots - tokens.shape[1])), constant_values=PAD)
  (_, logits), variables = model.apply(
      {"params": params}, wide, wide != PAD, jnp.zeros_like(wide),
      method=SentenceEncoder.seq2seq, mutable=["cache"])
  first = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return first, variables["cache"]


def make_step(model: SentenceEncoder, params, num_slots: int):
  """step(tokens [B], (cache, at [B, 1])) -> (next-token logits [B, V], (cache, at + 1))."""

  def step(tokens, state):
    cache, at = state
    mask = step_mask(at, num_slots, model.cfg.window)
    logits, updated = model.apply({"params": params, "cache": cache}, tokens[:, None], at, mask,
                                  method=SentenceEncoder.decode, mutable=["cache"])
    return logits[:, 0], (updated["cache"], at + 1)

  return step


def copies_of(strategy: Strategy, count: int) -> int:
  """Decoded copies of each prompt: the beams, or the samples (greedy: one)."""
  return {"greedy": 1, "sample": count, "beam": strategy.width}[strategy.name]


@functools.lru_cache(maxsize=8)
def generator(model: SentenceEncoder, *, max_new: int, strategy: Strategy, copies: int):
  """jit(params, tokens [N, n], lengths [N], key) -> (tokens [N, copies, max_new], scores
  [N, copies] or None), compiled once per prompt shape."""
  model = decoding_model(model)

  @jax.jit
  def run(params, tokens, lengths, key):
    n, num_slots = tokens.shape[0], tokens.shape[1] + max_new
    first, cache = prefill(model, params, tokens, lengths, num_slots)
    repeat = lambda x: jnp.repeat(x, copies, axis=0)  # copies of one prompt consecutive
    state = (jax.tree_util.tree_map(repeat, cache), repeat(lengths)[:, None])
    step = make_step(model, params, num_slots)
    if strategy.name == "beam":
      return beam_search(step, repeat(first), state, max_new=max_new, width=copies)
    out = decode(step, repeat(first), state, key, max_new=max_new, strategy=strategy)
    return out.reshape(n, copies, max_new), None

  return run


def generate_ids(model: SentenceEncoder, params, tokens, lengths, *, max_new: int,
                 strategy: Strategy, count: int = 1, seed: int = 0):
  """Segment B for each prompt (tokens [N, n] [CLS] a [SEP] padded, lengths [N]): a list per
  prompt of `count` token lists (without their [SEP]), best first for beam search."""
  strategy.check()
  copies = copies_of(strategy, count)
  check_decodable(model, tokens.shape[1] + max_new)
  run = generator(model, max_new=max_new, strategy=strategy, copies=copies)
  out, _ = run(params, jnp.asarray(tokens), jnp.asarray(lengths), jax.random.PRNGKey(seed))
  return [[until_sep(seq) for seq in np.asarray(rows)[:count]] for rows in out]


def until_sep(tokens) -> list:
  """The tokens before the first [SEP] (all of them if there is none)."""
  tokens = [int(t) for t in tokens]
  return tokens[:tokens.index(SEP)] if SEP in tokens else tokens

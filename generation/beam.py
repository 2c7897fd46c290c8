"""Beam search with a length-normalised score, over the same model step as strategies.decode.

A hypothesis's score is sum(log p) / length ** length_penalty, its length counting its [SEP]
(length_penalty 1: the mean log-probability per token, so that short hypotheses are not
favoured merely for having fewer factors below 1).

Each step expands the W live beams of a sequence into their 2W best continuations (by summed
log-probability). A continuation ending in [SEP] is a finished hypothesis if it ranks among
the best W of them (so that width 1 is exactly greedy decoding); the best W continuations
that do not end stay live. A sequence is done once it has W finished hypotheses, and at
max_new tokens its best live beams finish unended. Fixed shapes, jax.lax.while_loop.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from data.tokenizers import PAD, SEP
from generation.strategies import allowed


def take_beams(x, index):
  """x [b, n, ...] at index [b, m] along axis 1 -> [b, m, ...]."""
  return jnp.take_along_axis(x, index.reshape(*index.shape, *([1] * (x.ndim - 2))), axis=1)


def beam_search(step, logits, state, *, max_new: int, width: int,
                length_penalty: float = 1.0):
  """logits [b * W, V] and state (leading axis b * W): the W copies of each of b sequences,
  consecutive. Returns (tokens [b, W, max_new] int32, up to their [SEP] then [PAD]; scores
  [b, W]), best first."""
  total, vocab = logits.shape
  b, w = total // width, width
  neg = jnp.float32(-jnp.inf)

  def cond(carry):
    return (carry[0] < max_new) & ~jnp.all(carry[-1])

  def body(carry):
    j, logits, state, alive, alive_logp, finished, finished_score, done = carry
    logp = jax.nn.log_softmax(allowed(logits).astype(jnp.float32), axis=-1)
    total_logp = (alive_logp[..., None] + logp.reshape(b, w, vocab)).reshape(b, w * vocab)
    top, index = jax.lax.top_k(total_logp, 2 * w)  # best first
    parent, token = index // vocab, (index % vocab).astype(jnp.int32)
    seqs = take_beams(alive, parent).at[:, :, j].set(token)
    ends = (token == SEP) | (j == max_new - 1)
    finishing = ends & (jnp.arange(2 * w) < w) & jnp.isfinite(top)
    score = jnp.where(finishing, top / (j + 1.0) ** length_penalty, neg)
    best, which = jax.lax.top_k(jnp.concatenate([finished_score, score], axis=1), w)
    pool = jnp.concatenate([finished, seqs], axis=1)
    finished = jnp.where(done[:, None, None], finished, take_beams(pool, which))
    finished_score = jnp.where(done[:, None], finished_score, best)
    # the live beams: the best W continuations without [SEP]
    alive_logp, which = jax.lax.top_k(jnp.where(token == SEP, neg, top), w)
    alive = take_beams(seqs, which)
    rows = (jnp.arange(b)[:, None] * w + take_beams(parent, which)).reshape(-1)
    state = jax.tree_util.tree_map(lambda x: x[rows], state)
    done = done | jnp.all(jnp.isfinite(finished_score), axis=1)
    logits, state = step(take_beams(token, which).reshape(-1), state)
    return j + 1, logits, state, alive, alive_logp, finished, finished_score, done

  empty = jnp.full((b, w, max_new), PAD, jnp.int32)
  first = jnp.where(jnp.arange(w) == 0, 0.0, neg)  # the copies start as one beam
  start = (jnp.int32(0), logits, state, empty, jnp.broadcast_to(first, (b, w)), empty,
           jnp.full((b, w), neg), jnp.zeros(b, bool))
  out = jax.lax.while_loop(cond, body, start)
  return out[5], out[6]

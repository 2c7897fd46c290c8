"""Token choice (greedy; sampling with temperature, top-k and top-p) and the decoding loop.

The loop is model-agnostic: `step(tokens [B], state) -> (logits [B, V], state)` feeds one
token per sequence and returns the next-token logits (generation/seq2seq.py binds it to a
model with a key/value cache). It runs in jax.lax.while_loop over fixed shapes ([B, max_new]
output), so a batch compiles once, and stops early once every sequence has emitted [SEP].
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from data.tokenizers import CLS, MASK, PAD, SEP
from utils.errors import UserError

# never generated: the prompt's and the padding's tokens (SimBERT's targets are segment B's
# tokens and its [SEP]; [UNK] stays possible, as in training)
BANNED = (PAD, CLS, MASK)
STRATEGIES = ("greedy", "sample", "beam")


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How to choose tokens. greedy: the most probable; sample: from softmax(logits /
  temperature) restricted to the top_k most probable (0: all) and to the nucleus of
  probability top_p (1: all); beam: beam search of `width` beams (generation/beam.py)."""
  name: str = "greedy"
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  width: int = 1

  def check(self) -> "Strategy":
    if self.name not in STRATEGIES:
      raise UserError(f"unknown decoding strategy {self.name!r}; valid names: "
                      f"{list(STRATEGIES)}")
    if not self.temperature > 0:
      raise UserError(f"the temperature must be positive, got {self.temperature}")
    if self.top_k < 0:
      raise UserError(f"top_k must be at least 0 (0: no top-k filter), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise UserError(f"top_p must be in (0, 1] (1: no nucleus filter), got {self.top_p}")
    if self.width < 1:
      raise UserError(f"the beam width must be at least 1, got {self.width}")
    return self


def allowed(logits):
  """logits with the BANNED tokens at -inf."""
  return logits.at[..., jnp.array(BANNED)].set(-jnp.inf)


def nucleus_mask(logits, top_p: float):
  """[..., V] bool: the nucleus of softmax(logits), the fewest most probable tokens whose
  probability reaches top_p (each token whose more probable predecessors have not reached it
  yet, so the token that crosses top_p is in). Ties are ordered by token id."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  order = jnp.argsort(-probs, axis=-1, stable=True)
  ranked = jnp.take_along_axis(probs, order, axis=-1)
  before = jnp.cumsum(ranked, axis=-1) - ranked  # mass of the more probable tokens
  keep_ranked = before < top_p
  # back from rank order to token order: token t is at rank inverse[t]
  inverse = jnp.argsort(order, axis=-1)
  return jnp.take_along_axis(keep_ranked, inverse, axis=-1)


def filtered_logits(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
  """The logits sampling draws from: divided by the temperature, tokens outside the top_k
  and outside the nucleus at -inf."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    logits = jnp.where(nucleus_mask(logits, top_p), logits, -jnp.inf)
  return logits


def choose(strategy: Strategy, key, logits):
  """tokens [B] chosen from logits [B, V] (the BANNED tokens never)."""
  logits = allowed(logits)
  if strategy.name == "greedy":
    return jnp.argmax(logits, axis=-1)
  return jax.random.categorical(key, filtered_logits(logits, strategy.temperature,
                                                     strategy.top_k, strategy.top_p))


def decode(step, logits, state, key, *, max_new: int, strategy: Strategy):
  """Greedy or sampled decoding of up to max_new tokens per sequence.

  logits [B, V]: the first token's; state: the model's (step's) state. Returns tokens
  [B, max_new] int32: each sequence's tokens up to and including its [SEP], [PAD] after it.
  """
  batch = logits.shape[0]

  def cond(carry):
    j, _, _, done, _, _ = carry
    return (j < max_new) & ~jnp.all(done)

  def body(carry):
    j, logits, state, done, out, key = carry
    key, sub = jax.random.split(key)
    token = jnp.where(done, PAD, choose(strategy, sub, logits)).astype(jnp.int32)
    out = out.at[:, j].set(token)
    done = done | (token == SEP)
    logits, state = step(token, state)
    return j + 1, logits, state, done, out, key

  start = (jnp.int32(0), logits, state, jnp.zeros(batch, bool),
           jnp.full((batch, max_new), PAD, jnp.int32), key)
  return jax.lax.while_loop(cond, body, start)[4]

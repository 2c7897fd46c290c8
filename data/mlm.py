"""MLM data: packing documents into fixed-length sequences, and BERT masking.

Training batches are a pure function of (seed, step): each epoch draws its own permutation of
the sequences and its own offset into the packed stream, so a resumed run sees exactly the
batches an uninterrupted run would have seen, with no iterator state to save beyond the step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from data.corpus import DataError
from data.tokenizers import MASK, NUM_SPECIAL, SEP


def pack(docs_ids: list[list[int]]) -> np.ndarray:
  """Concatenate tokenised documents into one stream, each followed by [SEP]."""
  parts = []
  for ids in docs_ids:
    parts.append(np.asarray(ids, np.int32))
    parts.append(np.array([SEP], np.int32))
  return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


class TrainBatches:
  """Fixed-length training sequences cut from a packed stream, reshuffled every epoch."""

  def __init__(self, stream: np.ndarray, length: int, batch_size: int, seed: int):
    self.stream, self.length, self.batch_size, self.seed = stream, length, batch_size, seed
    # one sequence of slack so that every epoch's random offset leaves the same count
    self.per_epoch = (len(stream) - length) // length
    if self.per_epoch < 1:
      raise DataError(
          f"the training split has {len(stream)} tokens, too few for one training sequence of "
          f"length {length} (need at least {2 * length}); use a larger corpus or a shorter "
          "data.train_length")

  @functools.lru_cache(maxsize=4)
  def _epoch(self, epoch: int):
    rng = np.random.default_rng([self.seed, epoch])
    return int(rng.integers(self.length)), rng.permutation(self.per_epoch)

  def batch(self, step: int) -> np.ndarray:
    """Tokens [batch_size, length] of training step `step` (0-based)."""
    out = np.empty((self.batch_size, self.length), np.int32)
    for i, g in enumerate(range(step * self.batch_size, (step + 1) * self.batch_size)):
      epoch, within = divmod(g, self.per_epoch)
      offset, perm = self._epoch(epoch)
      start = offset + int(perm[within]) * self.length
      out[i] = self.stream[start:start + self.length]
    return out

  def epoch_of(self, step: int) -> float:
    return step * self.batch_size / self.per_epoch


def eval_sequences(stream: np.ndarray, length: int, max_tokens: int) -> np.ndarray:
  """Non-overlapping sequences [N, length] from the start of the validation stream.

  N = max_tokens // length (at least 1), so every length is scored on about the same number of
  tokens; fewer if the stream is short.
  """
  available = len(stream) // length
  if available < 1:
    raise DataError(f"the validation split has {len(stream)} tokens, fewer than one evaluation "
                    f"sequence of length {length}; use a larger corpus, a larger "
                    "data.valid_fraction, or shorter eval.lengths")
  n = min(available, max(1, max_tokens // length))
  return stream[: n * length].reshape(n, length)


def num_predictions(length: int, rate: float) -> int:
  return max(1, int(round(rate * length)))


def mlm_mask(key, tokens, *, vocab_size: int, rate: float = 0.15, mask_prob: float = 0.8,
             random_prob: float = 0.1):
  """BERT masking with a fixed count of predictions per sequence (static shapes).

  Picks round(rate * n) positions per row uniformly among maskable tokens (not special, not
  padding); of those, mask_prob become [MASK], random_prob a random non-special token, the rest
  stay. Returns (inputs, positions [b,P], targets [b,P], weights [b,P]); weight 0 marks a pick
  that fell on a special token because the row had too few maskable ones.
  """
  b, n = tokens.shape
  p = num_predictions(n, rate)
  k_pick, k_kind, k_rand = jax.random.split(key, 3)
  maskable = tokens >= NUM_SPECIAL
  score = jnp.where(maskable, jax.random.uniform(k_pick, (b, n)), 2.0)
  positions = jnp.argsort(score, axis=-1)[:, :p].astype(jnp.int32)
  targets = jnp.take_along_axis(tokens, positions, axis=1)
  weights = jnp.take_along_axis(maskable, positions, axis=1).astype(jnp.float32)
  u = jax.random.uniform(k_kind, (b, p))
  random_tok = jax.random.randint(k_rand, (b, p), NUM_SPECIAL, vocab_size)
  new = jnp.where(u < mask_prob, MASK, jnp.where(u < mask_prob + random_prob, random_tok, targets))
  new = jnp.where(weights > 0, new, targets)
  rows = jnp.arange(b)[:, None]
  inputs = tokens.at[rows, positions].set(new)
  return inputs, positions, targets, weights

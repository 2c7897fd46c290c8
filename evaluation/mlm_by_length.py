"""MLM accuracy and loss at each evaluation length, on the validation split.

Every length is scored on (about) the same number of tokens, with a masking key fixed by
(eval.seed, length), so two runs are compared on exactly the same predictions.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from data.mlm import eval_sequences, mlm_mask
from data.tokenizers import PAD
from objectives.mlm import mlm_loss


def make_eval_step(model, vocab_size: int, mask_rate: float):
  @jax.jit
  def step(params, tokens, key):
    inputs, positions, targets, weights = mlm_mask(key, tokens, vocab_size=vocab_size,
                                                   rate=mask_rate)
    logits = model.apply({"params": params}, inputs, tokens != PAD, deterministic=True,
                         targets_at=positions)
    return mlm_loss(logits, targets, weights)[1]
  return step


def split_lengths(lengths, max_length):
  """(usable, refused) lengths for a model whose longest sequence is max_length (None: any)."""
  usable = [n for n in lengths if max_length is None or n <= max_length]
  return usable, [n for n in lengths if n not in usable]


def evaluate_lengths(model, params, valid_stream, lengths, *, vocab_size: int, mask_rate: float,
                     max_tokens: int, batch_tokens: int, seed: int) -> dict:
  """{length: {'accuracy', 'loss', 'predictions', 'sequences'}} for each length."""
  step = make_eval_step(model, vocab_size, mask_rate)
  results = {}
  for n in lengths:
    seqs = eval_sequences(valid_stream, n, max_tokens)
    bs = max(1, min(len(seqs), batch_tokens // n))
    key = jax.random.fold_in(jax.random.PRNGKey(seed), n)
    tot = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for i in range(math.ceil(len(seqs) / bs)):
      batch = seqs[i * bs:(i + 1) * bs]
      if len(batch) < bs:  # pad the last batch with empty rows: weight 0, no recompilation
        batch = np.concatenate([batch, np.full((bs - len(batch), n), PAD, batch.dtype)])
      out = step(params, jnp.asarray(batch), jax.random.fold_in(key, i))
      for k in tot:
        tot[k] += float(out[k])
    results[n] = {"accuracy": tot["correct"] / tot["count"], "loss": tot["loss_sum"] / tot["count"],
                  "predictions": int(tot["count"]), "sequences": int(len(seqs))}
  return results

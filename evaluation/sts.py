"""STS evaluation: Spearman correlation between cosine similarities and gold scores.

Spearman is implemented here (Pearson of average ranks, ties sharing the mean of their ranks)
and tested against scipy.stats.spearmanr, so evaluation needs no scipy. Optional
BERT-whitening (evaluation/whitening.py) is fitted on the evaluation sentences or on a corpus.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from data.sts import encode_sentences
from data.tokenizers import PAD
from evaluation import whitening
from utils.errors import UserError


def rank_average(x) -> np.ndarray:
  """1-based ranks; tied values share the average of the ranks they span."""
  x = np.asarray(x, np.float64)
  if np.isnan(x).any():
    raise UserError("cannot rank NaN values")
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  last = np.cumsum(counts)  # the rank of each distinct value's last occurrence
  return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def pearson(x, y) -> float:
  x = np.asarray(x, np.float64) - np.mean(x)
  y = np.asarray(y, np.float64) - np.mean(y)
  denom = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
  return float(np.dot(x, y) / denom) if denom > 0 else math.nan  # constant input: undefined


def spearman(x, y) -> float:
  if len(x) != len(y) or len(x) < 2:
    raise UserError(f"spearman needs two sequences of the same length >= 2, got {len(x)}, "
                    f"{len(y)}")
  return pearson(rank_average(x), rank_average(y))


def cosine_rows(a, b) -> np.ndarray:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                       1e-12)


def make_embedder(model, params, tokenizer, length: int, batch_size: int = 256,
                  project: bool = True):
  """sentences -> embeddings [N, D] (numpy), deterministic, in fixed-shape batches."""

  @jax.jit
  def apply(params, tokens):  # params as an argument: not baked into the program as constants
    return model.apply({"params": params}, tokens, tokens != PAD, project=project)

  def embed(sentences):
    tokens = encode_sentences(tokenizer, sentences, length)
    n = len(tokens)
    bs = min(batch_size, max(n, 1))
    out = []
    for i in range(0, n, bs):
      chunk = tokens[i:i + bs]
      pad = bs - len(chunk)  # pad the last batch with empty rows: no recompilation
      if pad:
        chunk = np.concatenate([chunk, np.full((pad, length), PAD, chunk.dtype)])
      out.append(np.asarray(apply(params, jnp.asarray(chunk)))[:bs - pad])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  return embed


def sts_spearman(embed, data, whitening_k: int | None = None, whitening_corpus=None) -> float:
  """Spearman x 1 of cos(embed(s1), embed(s2)) against data.scores.

  whitening_k: None = no whitening; 0 = whiten keeping every dimension; k > 0 keep k.
  whitening_corpus: sentences to fit the whitening on (default: the evaluation sentences).
  """
  e1, e2 = embed(data.s1), embed(data.s2)
  if whitening_k is not None:
    fit_on = embed(whitening_corpus) if whitening_corpus else np.concatenate([e1, e2])
    mu, w = whitening.fit(fit_on, whitening_k)
    e1, e2 = whitening.transform(e1, mu, w), whitening.transform(e2, mu, w)
  return spearman(cosine_rows(e1, e2), data.scores)

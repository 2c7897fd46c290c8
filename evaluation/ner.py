"""Span decoding and entity precision / recall / F1 of a GlobalPointer model.

Decoding is thresholding: every (type, i, j) whose score is above 0 is an entity (the loss
puts gold spans above 0 and the rest below), so nested and overlapping entities come out as
they are, with no search. Scores are counted over the set of (sentence, type, start, end):
an entity is right only with its type and both boundaries.
"""
from __future__ import annotations

import jax
import numpy as np

from data.ner import spannable
from data.tokenizers import PAD


def decode(scores, types, threshold: float = 0.0) -> set:
  """One sentence's scores [types, n, n] -> {(type name, start, end)} in character offsets
  (token t is character t - 1: the [CLS] comes first)."""
  return {(types[t], int(i) - 1, int(j) - 1) for t, i, j in np.argwhere(scores > threshold)}


def entity_f1(gold, predicted) -> dict:
  """gold, predicted: one set of entities per sentence -> precision, recall, F1 and counts
  (a ratio with nothing to count is 0)."""
  correct = sum(len(g & p) for g, p in zip(gold, predicted, strict=True))
  n_gold, n_pred = sum(map(len, gold)), sum(map(len, predicted))
  precision = correct / n_pred if n_pred else 0.0
  recall = correct / n_gold if n_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1, "gold": n_gold,
          "predicted": n_pred, "correct": correct}


def predict(model, params, tokens, types, batch_size: int) -> list[set]:
  """The decoded entities of every row of tokens [N, n], in batches of batch_size (the last
  padded with [PAD] rows, so that one program serves every batch)."""
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t, t != PAD, spannable(t)))
  out = []
  for lo in range(0, len(tokens), batch_size):
    batch = tokens[lo:lo + batch_size]
    rows = len(batch)
    if rows < batch_size and lo > 0:
      batch = np.concatenate([batch, np.full((batch_size - rows,) + batch.shape[1:], PAD,
                                             batch.dtype)])
    scores = np.asarray(apply(params, batch))[:rows]
    out.extend(decode(s, types) for s in scores)
  return out


def score_ner(model, params, sentences, tokens, types, batch_size: int) -> dict:
  """entity_f1 of the model on sentences (encoded as tokens) against all their entities:
  one cut off by truncation or of a type the model does not know counts as missed."""
  return entity_f1([set(s.entities) for s in sentences],
                   predict(model, params, tokens, types, batch_size))

"""PET accuracy: the label whose verbalizer word the MLM finds likeliest at the slots."""
from __future__ import annotations

import jax
import numpy as np

from data.tokenizers import PAD
from objectives.pet import label_scores


def predict_scores(model, params, tokens, slots, verbalizer, batch_size: int) -> np.ndarray:
  """Label scores [N, C] of every row (objectives.pet.label_scores), in batches of batch_size
  (the last padded with [PAD] rows, so that one program serves every batch)."""
  apply = jax.jit(lambda p, t, s: label_scores(
      model.apply({"params": p}, t, t != PAD, targets_at=s), verbalizer))
  out = []
  for lo in range(0, len(tokens), batch_size):
    t, s = tokens[lo:lo + batch_size], slots[lo:lo + batch_size]
    rows = len(t)
    if rows < batch_size and lo > 0:
      t = np.concatenate([t, np.full((batch_size - rows,) + t.shape[1:], PAD, t.dtype)])
      s = np.concatenate([s, np.zeros((batch_size - rows,) + s.shape[1:], s.dtype)])
    out.append(np.asarray(apply(params, t, s))[:rows])
  return np.concatenate(out)


def accuracy(scores, gold, labels) -> dict:
  """Accuracy of argmax scores [N, C] against gold label indices [N]; per label its
  examples, correct predictions and how often it was predicted."""
  predicted = np.argmax(scores, axis=-1)
  gold = np.asarray(gold)
  per_label = {label: {"examples": int(np.sum(gold == c)),
                       "correct": int(np.sum((gold == c) & (predicted == c))),
                       "predicted": int(np.sum(predicted == c))}
               for c, label in enumerate(labels)}
  correct = int(np.sum(predicted == gold))
  return {"accuracy": correct / len(gold), "correct": correct, "examples": len(gold),
          "per_label": per_label}

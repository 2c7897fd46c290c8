"""PET: classification as masked-LM prediction at a pattern's [MASK] slots.

Label scores: with the MLM's logits at the S slots, l [B, S, V], and the verbalizer's tokens
w [C, S] (label c's word, one token per slot),

  score(b, c) = sum_s log softmax(l[b, s])[w[c, s]],

the log-probability of label c's word filling the slots (the slots predicted independently,
as BERT's MLM does); the prediction is the label of highest score.

Losses (pet.loss):
- mlm (the default, the post's): the MLM cross entropy over the whole vocabulary at the
  slots (averaged over the slots), the gold label's word as the targets. It is the
  pretraining objective itself, so fine-tuning is more masked-LM training on patterned text:
  the model stays an MLM (a fine-tuned workdir is scored as the zero-shot one is), and the
  ordinary MLM loss on unlabelled text adds on the same scale. It also pushes down every
  other token of the vocabulary, which the decision ignores.
- labels: the cross entropy of softmax over the C label scores: only the choice among the
  verbalizer words is trained, which is what accuracy measures.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("mlm", "labels")


def label_scores(logits, verbalizer):
  """logits [B, S, V] at the slots, verbalizer [C, S] -> scores [B, C] (float32)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, S, V]
  slots = jnp.arange(verbalizer.shape[1])
  # picked[b, c, s] = logp[b, s, verbalizer[c, s]]
  picked = logp[:, slots[None, :], verbalizer]
  return jnp.sum(picked, axis=-1)


def pet_loss(logits, verbalizer, labels, kind: str = "mlm"):
  """Mean loss over the batch and sums for exact aggregation: (loss, {'loss_sum', 'correct',
  'count'}); labels [B] are indices into the verbalizer's rows."""
  scores = label_scores(logits, verbalizer)
  if kind == "mlm":
    # the MLM cross entropy averaged over an example's slots, as mlm_loss averages over the
    # masked tokens: -log p(word) / S
    per_example = -jnp.take_along_axis(scores, labels[:, None], axis=1)[:, 0] / (
        verbalizer.shape[1])
  elif kind == "labels":
    per_example = -jnp.take_along_axis(jax.nn.log_softmax(scores, axis=-1), labels[:, None],
                                       axis=1)[:, 0]
  else:
    raise ValueError(f"unknown PET loss {kind!r}; valid names: {list(LOSSES)}")
  correct = jnp.sum(jnp.argmax(scores, axis=-1) == labels)
  count = jnp.asarray(labels.shape[0], jnp.float32)
  loss_sum = jnp.sum(per_example)
  return loss_sum / count, {"loss_sum": loss_sum, "correct": correct, "count": count}

"""GlobalPointer's loss: multi-label softmax cross-entropy over every span of a type.

For one (example, type), with s the scores of all (i, j) flattened and P the gold spans,

  L = log(1 + sum_{(i,j) not in P} e^{s_ij}) + log(1 + sum_{(i,j) in P} e^{-s_ij}),

softmax's "the target scores above the rest" with a threshold 0 in place of a single target:
every gold span is pushed above 0, every other span below it, and a sentence may have any
number of entities (none included). Masked spans carry the head's large negative score, so
they add e^{NEG} = 0 to the first sum. The loss is the mean over examples and types.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def multilabel_crossentropy(scores, labels):
  """scores [..., m], labels [..., m] bool -> [...]: the loss above, per leading index."""
  scores = scores.astype(jnp.float32)
  zero = jnp.zeros(scores.shape[:-1] + (1,), jnp.float32)  # the "1 +": e^0 in each sum
  # -inf drops an entry from a sum; jnp.where routes no gradient to the branch not taken
  neg = jnp.where(labels, -jnp.inf, scores)
  pos = jnp.where(labels, -scores, -jnp.inf)
  return (jax.nn.logsumexp(jnp.concatenate([neg, zero], -1), axis=-1) +
          jax.nn.logsumexp(jnp.concatenate([pos, zero], -1), axis=-1))


def span_labels(spans, num_types: int, length: int):
  """spans [b, S, 3] int (type, start, end; rows with type -1 are padding) -> labels
  [b, num_types, length, length] bool, True at every gold (type, start, end)."""
  b = spans.shape[0]
  t, i, j = spans[..., 0], spans[..., 1], spans[..., 2]
  real = t >= 0
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], t.shape)
  # padding rows write False into (0, 0, 0), which max() leaves as it is
  zero = jnp.zeros_like(t)
  out = jnp.zeros((b, num_types, length, length), bool)
  return out.at[rows, jnp.where(real, t, zero), jnp.where(real, i, zero),
                jnp.where(real, j, zero)].max(real)


def globalpointer_loss(scores, labels):
  """scores, labels [b, types, n, n] -> the mean over (example, type) of the loss above."""
  b, t = scores.shape[:2]
  return jnp.mean(multilabel_crossentropy(scores.reshape(b, t, -1), labels.reshape(b, t, -1)))

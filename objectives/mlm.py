"""Masked-LM loss and accuracy on the predicted positions only (docs/techniques.md section 6)."""
from __future__ import annotations

import jax.numpy as jnp
import optax


def mlm_loss(logits, targets, weights):
  """Mean cross-entropy over weighted positions, plus sums for exact aggregation.

  Returns (loss, {'loss_sum', 'correct', 'count'}) so that evaluation can add batches up
  exactly instead of averaging averages.
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  count = jnp.sum(weights)
  loss_sum = jnp.sum(ce * weights)
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
  return loss_sum / jnp.maximum(count, 1.0), {"loss_sum": loss_sum, "correct": correct,
                                               "count": count}

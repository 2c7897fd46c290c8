"""Nystromformer: softmax attention through m landmarks (docs/techniques.md section 4).

  softmax(Q K~^T) . pinv(softmax(Q~ K~^T)) . softmax(Q~ K^T) V,

Q~, K~ the means of m contiguous segments of the (scaled) queries and keys. Cost O(n m).
The pseudo-inverse is the paper's iteration Z <- Z (13I - AZ (15I - AZ (7I - AZ))) / 4 from
Z0 = A^T / (|A|_1 |A|_inf), model.nystrom_iterations times.

Segments are cut from the valid (unpadded) tokens of each row only: token of rank r among L
valid ones belongs to segment floor(r m / L). So lengths not divisible by m work (segments
differ in size by at most one), padding never enters a mean, and outputs at unpadded
positions do not depend on how much padding follows. With fewer than m valid tokens some
segments are empty; their landmarks are masked out of all three softmaxes, which is exactly
the Nystrom approximation with the non-empty landmarks. With m >= n every token is its own
landmark and the result is exact attention (up to the iterative inverse).

Bidirectional only (the landmarks mix past and future). The residual depthwise convolution
on V of the paper's code is not included: this is the attention approximation alone.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.attention.linear import key_validity
from model.attention.softmax import masked_softmax
from model.variants import Field, KernelVariant, at_least, positive, unbounded


def landmark_weights(valid, m: int):
  """valid [b, n] -> ([b, n, m] segment-averaging weights, [b, m] non-empty landmarks)."""
  rank = jnp.cumsum(valid, axis=-1, dtype=jnp.int32) - 1
  length = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True, dtype=jnp.int32), 1)
  segment = (rank * m) // length  # integer arithmetic: exact segment boundaries
  onehot = jax.nn.one_hot(segment, m, dtype=jnp.float32) * valid[..., None]
  count = jnp.sum(onehot, axis=1)
  return onehot / jnp.maximum(count, 1.0)[:, None, :], count > 0


def iterative_pinv(a, iterations: int):
  """Pseudo-inverse of a batch of [m, m] matrices by the Nystromformer iteration."""
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  norm = (jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1) *
          jnp.max(jnp.sum(jnp.abs(a), axis=-1), axis=-1))[..., None, None]
  z = jnp.swapaxes(a, -1, -2) / jnp.where(norm > 0, norm, 1.0)  # all-zero: fully masked row

  def step(_, z):
    az = a @ z
    return 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))

  return jax.lax.fori_loop(0, iterations, step, z)


def nystrom_attention(q, k, v, inputs, cfg):
  t = inputs.terms
  if t.rotate is not None:
    q, k = t.rotate(q, inputs.q_pos), t.rotate(k, inputs.k_pos)
  keys, rows = key_validity(inputs.mask)
  weights, landmark = landmark_weights(keys, cfg.nystrom_landmarks)
  qs = q.astype(jnp.float32) * jnp.swapaxes(inputs.scale, 1, 2)  # lambda_i q_i
  kf = k.astype(jnp.float32)
  mean = lambda x: jnp.einsum("bnm,bnhd->bmhd", weights, x)
  q_land, k_land = mean(qs), mean(kf)
  logits = lambda a, b: jnp.einsum("bqhd,bkhd->bhqk", a, b)
  cols = landmark[:, None, None, :]  # [b, 1, 1, m]
  rows_land = landmark[:, None, :, None]  # [b, 1, m, 1]: empty landmark rows become zero
  kernel1 = masked_softmax(logits(qs, k_land), cols)  # [b, h, n, m]
  kernel2 = masked_softmax(logits(q_land, k_land), cols & rows_land)  # [b, h, m, m]
  kernel3 = masked_softmax(logits(q_land, kf), keys[:, None, None, :] & rows_land)  # [b,h,m,n]
  kv = jnp.einsum("bhmn,bnhd->bhmd", kernel3, v.astype(jnp.float32))
  kv = iterative_pinv(kernel2, cfg.nystrom_iterations) @ kv
  out = jnp.einsum("bhqm,bhmd->bqhd", kernel1, kv)
  return (out * rows[:, :, None, None]).astype(v.dtype)


FIELDS = (
    Field("nystrom_landmarks", 32, "number of landmarks m (segment means of the valid tokens)",
          positive, bad=(0,)),
    Field("nystrom_iterations", 6, "iterations of the pseudo-inverse", at_least(0), bad=(-1,)),
)

# Three softmaxes through the landmarks, but never the [q, k] probabilities: nothing for
# attention dropout to act on.
VARIANT = KernelVariant(
    name="nystrom", doc="softmax attention through m landmarks, O(n m); bidirectional",
    fields=FIELDS, honours=frozenset({"rotate"}), masks=frozenset(), probabilities=False,
    uses_scale=True, max_length=unbounded, fn=nystrom_attention)

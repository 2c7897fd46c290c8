"""Linear attention: sim(q, k) = phi(q).phi(k) with phi = elu + 1 (docs/techniques.md section 4).

  out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j))

Associativity makes this O(n) in time and memory: the [q, k] matrix is never formed. The
causal form replaces the sums over j by prefix sums over j <= i, computed chunk by chunk so
that memory stays O(n) too (a plain cumsum of phi(k_j) v_j^T would store n [f, d] matrices).

With RoPE (terms.rotate) the rotation is applied to the features phi(q), phi(k) in the
numerator only; the denominator keeps the unrotated, positive features, so it stays positive.

The shared machinery (`feature_attention`) also serves the Performer, whose features
approximate exp(q.k).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.variants import KernelVariant, unbounded

CHUNK = 64  # causal prefix sums: quadratic inside a chunk, a running state across chunks


def key_validity(mask):
  """[b, 1, q|1, k] mask -> ([b, k] keys some query may see, [b, q|1] queries that see any).

  An O(n) kernel can only honour key padding (and causality, from the causal flag): a key is
  valid iff some query may attend to it, which is exact for padding and padding & causal.
  """
  return jnp.any(mask[:, 0], axis=-2), jnp.any(mask[:, 0], axis=-1)


def _bidirectional_sums(fq, fk, v):
  """sum_j (fq_i . fk_j) v_j over all j: [b, n, h, e]."""
  kv = jnp.einsum("bkhf,bkhe->bhfe", fk, v)
  return jnp.einsum("bqhf,bhfe->bqhe", fq, kv)


def _causal_sums(fq, fk, v, chunk: int = CHUNK):
  """sum_{j <= i} (fq_i . fk_j) v_j: [b, n, h, e], in O(n) memory.

  Inside a chunk of c tokens the masked [c, c] product is formed directly; across chunks a
  prefix sum of the per-chunk states sum_j fk_j v_j^T ([f, e] each) carries the past.
  """
  b, n, h, f = fq.shape
  c = min(chunk, n)
  pad = -n % c
  fq, fk, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (fq, fk, v))
  split = lambda t: t.reshape(b, (n + pad) // c, c, h, t.shape[-1])
  fq, fk, v = split(fq), split(fk), split(v)
  kv = jnp.einsum("bschf,bsche->bshfe", fk, v)
  # state before chunk s: the sum over chunks < s (exclusive prefix sum, shifted by one chunk)
  past = jnp.cumsum(kv, axis=1)
  past = jnp.concatenate([jnp.zeros_like(past[:, :1]), past[:, :-1]], axis=1)
  inter = jnp.einsum("bschf,bshfe->bsche", fq, past)
  scores = jnp.einsum("bsqhf,bskhf->bshqk", fq, fk) * jnp.tril(jnp.ones((c, c), fq.dtype))
  intra = jnp.einsum("bshqk,bskhe->bsqhe", scores, v)
  return (inter + intra).reshape(b, n + pad, h, -1)[:, :n]


def feature_attention(fq, fk, v, inputs):
  """out_i = sum_j (rot fq_i . rot fk_j) v_j / sum_j (fq_i . fk_j) for nonnegative features.

  fq, fk: [b, n, h, f] features (phi(q), phi(k)); v: [b, n, h, d]. Honours key padding, the
  causal flag and a RoPE rotation (numerator only). Fully masked rows give zeros.
  """
  keys, rows = key_validity(inputs.mask)
  fq = fq.astype(jnp.float32)
  fk = fk.astype(jnp.float32) * keys[:, :, None, None]  # padded keys contribute nothing
  vf = v.astype(jnp.float32)
  sums = _causal_sums if inputs.causal else _bidirectional_sums
  rotate = inputs.terms.rotate
  if rotate is not None:
    num = sums(rotate(fq, inputs.q_pos), rotate(fk, inputs.k_pos), vf)
  else:
    num = sums(fq, fk, vf)
  den = sums(fq, fk, jnp.ones(vf.shape[:-1] + (1,), jnp.float32))
  out = num / jnp.where(den > 0, den, 1.0)
  return (out * rows[:, :, None, None]).astype(v.dtype)


def elu_feature(x):
  return jax.nn.elu(x) + 1.0


def linear_attention(q, k, v, inputs, cfg=None):
  # No logit scale: lambda (standard or log-n) is defined for the logits of a softmax, and
  # phi(lambda q) is not a tempered version of phi(q); linear attention ignores inputs.scale.
  del cfg
  return feature_attention(elu_feature(q.astype(jnp.float32)), elu_feature(k.astype(jnp.float32)),
                           v, inputs)


VARIANT = KernelVariant(
    name="linear", doc="phi(q).phi(k) attention with phi = elu + 1, O(n); no logit scale",
    honours=frozenset({"rotate"}), masks=frozenset({"causal"}), probabilities=False,
    uses_scale=False, max_length=unbounded, fn=linear_attention)

"""Standard softmax attention: softmax(lambda * q.k + bias) v (docs/techniques.md sections 1-3)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.attention.base import ALL_MASKS
from model.attention.fused import ATTENTION_IMPL
from model.attention.fused import build_check as fused_build_check
from model.positions.base import TERM_NAMES
from model.variants import FusedForm, KernelVariant, unbounded


def masked_softmax(logits, mask):
  """Softmax over the last axis with a boolean mask; fully masked rows give zeros, not NaN."""
  logits = logits.astype(jnp.float32)
  neg = jnp.finfo(jnp.float32).min / 2  # finite: a fully masked row stays finite
  probs = jax.nn.softmax(jnp.where(mask, logits, neg), axis=-1)
  return probs * jnp.any(mask, axis=-1, keepdims=True)


def entropy_sums(probs, mask):
  """Per head: (sum over real query rows of H = -sum_j p log p, number of such rows).

  Sums rather than means so that batches and sequences add up exactly. 0 log 0 = 0.
  """
  p = probs.astype(jnp.float32)
  h = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)  # [b,h,q]
  rows = jnp.broadcast_to(jnp.any(mask, axis=-1), h.shape).astype(jnp.float32)
  return jnp.sum(h * rows, axis=(0, 2)), jnp.sum(rows, axis=(0, 2))


def attention_logits(q, k, inputs):
  """Scaled logits [b, h, q, k] including every position term; q, k already rotated."""
  t = inputs.terms
  if t.qk_logits is not None:  # the encoding forms q.k itself (ReRoPE)
    logits = t.qk_logits(q, k)
  else:
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  if t.content_logits is not None:
    logits = logits + t.content_logits(q, k)
  logits = logits * inputs.scale * t.logit_multiplier
  if t.bias is not None:
    logits = logits + t.bias
  return logits


def softmax_attention(q, k, v, inputs, cfg=None):
  t = inputs.terms
  if t.rotate is not None:
    q, k = t.rotate(q, inputs.q_pos), t.rotate(k, inputs.k_pos)
  probs = masked_softmax(inputs.logits_transform(attention_logits(q, k, inputs)), inputs.mask)
  inputs.observe(probs)
  probs = inputs.dropout(probs)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
  if t.value_term is not None:
    out = out + t.value_term(probs).astype(out.dtype)
  return out


def fused_softmax_attention(q, k, v, inputs, cfg=None, implementation=None):
  """softmax_attention as one jax.nn.dot_product_attention call (model.attention_impl).

  The scale lambda_i (per query row: log-n) and a logit multiplier go into q, so the call's
  own scale is 1; content terms, which sit before the scale, enter its bias times that factor:
  (q.k + c) lambda m + b = (lambda m q).k + (c lambda m + b). The mask is the call's boolean
  mask. Logits and softmax are float32 inside the call, as on the einsum path.
  """
  del cfg
  t = inputs.terms
  if t.rotate is not None:
    q, k = t.rotate(q, inputs.q_pos), t.rotate(k, inputs.k_pos)
  factor = inputs.scale * t.logit_multiplier  # [b|1, 1, q, 1] float32
  bias = t.bias
  if t.content_logits is not None:
    content = t.content_logits(q, k) * factor
    bias = content if bias is None else content + bias
  scaled_q = (q.astype(jnp.float32) * jnp.swapaxes(factor, 1, 2)).astype(q.dtype)
  out = jax.nn.dot_product_attention(scaled_q, k, v, bias=bias, mask=inputs.mask, scale=1.0,
                                     implementation=implementation)
  # a query with no key to attend to gets zeros, as masked_softmax gives (the call would
  # average every value)
  rows = jnp.any(inputs.mask, axis=-1)[:, 0, :, None, None]  # [b, q, 1, 1]
  return jnp.where(rows, out, jnp.zeros((), out.dtype))


FUSED = FusedForm(
    fn=fused_softmax_attention,
    honours=frozenset({"rotate", "content_logits", "bias", "logit_multiplier"}),
    cannot={"qk_logits": "ReRoPE forms its logits from two products selected per pair, and "
                         "the fused call takes one q.k",
            "value_term": "Shaw's value vectors are a sum over the attention probabilities, "
                          "which the fused call never returns"})

VARIANT = KernelVariant(
    name="softmax", doc="softmax_j(lambda q_i.k_j + b_ij) v_j over the full [q, k] logits",
    fields=(ATTENTION_IMPL,), build_check=fused_build_check,
    honours=frozenset(TERM_NAMES), masks=ALL_MASKS, probabilities=True, uses_scale=True,
    max_length=unbounded, fn=softmax_attention, transforms_logits=True, fused=FUSED)

"""Performer (FAVOR+): softmax attention through positive random features (docs/techniques.md section 4).

  exp(q.k) = E_w[phi(q) . phi(k)],  phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),

with the m rows of W drawn as blocks of orthogonal directions (lower variance than i.i.d.
rows), each rescaled to the norm of a Gaussian vector so that every row is still marginally
N(0, I). The features are positive, so the denominator of the estimate stays positive, and
attention becomes linear attention with these features (model/attention/linear.py): O(n m d).

The logit scale lambda of the model (standard or log-n) is honoured: lambda q.k is split as
(lambda d^(1/4) q) . (d^(-1/4) k), the usual symmetric split when lambda = 1/sqrt(d).

W is fixed per layer (drawn from a key derived from the layer's name, so it needs no stored
state and is the same at train and eval time), or, with model.performer_redraw, drawn anew
at every training step from the step's dropout key (the fixed W is then used at eval time).
"""
from __future__ import annotations

import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.attention.linear import feature_attention, key_validity
from model.positions import get_position
from model.variants import Field, KernelVariant, any_value, positive, unbounded
from utils.errors import ConfigError


def orthogonal_features(key, m: int, d: int):
  """[m, d] random projection: ceil(m/d) blocks of d orthogonal rows, chi(d)-distributed norms."""
  k_dirs, k_norms = jax.random.split(key)
  blocks = -(-m // d)
  q, r = jnp.linalg.qr(jax.random.normal(k_dirs, (blocks, d, d)))
  # sign fix makes each block Haar-distributed, so every row is uniform on the sphere
  q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
  dirs = jnp.swapaxes(q, -1, -2).reshape(blocks * d, d)[:m]
  norms = jnp.linalg.norm(jax.random.normal(k_norms, (m, d)), axis=-1)
  return dirs * norms[:, None]


def positive_features(x, w, valid=None):
  """phi(x) [b, n, h, m] for x [b, n, h, d], stabilised by subtracting a max in the exponent.

  Queries (valid None): the max of each row's exponents; keys: the max over all valid keys
  and features of a head. Either factor is common to the numerator and the denominator of
  the rows it touches, so it cancels exactly; only overflow/underflow is avoided.
  """
  z = jnp.einsum("bnhd,md->bnhm", x, w) - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
  if valid is None:
    c = jnp.max(z, axis=-1, keepdims=True)
  else:
    c = jnp.max(jnp.where(valid[:, :, None, None], z, -jnp.inf), axis=(1, 3), keepdims=True)
    c = jnp.where(jnp.isfinite(c), c, 0.0)  # no valid key at all
  return jnp.exp(z - jax.lax.stop_gradient(c)) / math.sqrt(w.shape[0])


def performer_attention(q, k, v, inputs, w):
  """FAVOR+ estimate of softmax(lambda q.k) v with the random projection w [m, d]."""
  keys, _ = key_validity(inputs.mask)
  d = q.shape[-1]
  lam = jnp.swapaxes(inputs.scale, 1, 2)  # [b, 1, q|1, 1] -> [b, q|1, 1, 1]
  xq = q.astype(jnp.float32) * lam * d ** 0.25
  xk = k.astype(jnp.float32) * d ** -0.25
  return feature_attention(positive_features(xq, w), positive_features(xk, w, keys), v, inputs)


def layer_key(path) -> jax.Array:
  """A fixed key per layer, from its module path (stable across runs and processes)."""
  return jax.random.PRNGKey(zlib.crc32("/".join(path).encode()))


class PerformerAttention(nn.Module):
  cfg: "ModelConfig"  # noqa: F821 (model/config.py)

  @nn.compact
  def __call__(self, q, k, v, inputs):
    # a dropout rng is present only in training steps, which is when a redraw is wanted
    if self.cfg.performer_redraw and self.has_rng("dropout"):
      key = self.make_rng("dropout")
    else:
      key = layer_key(self.path)
    w = orthogonal_features(key, self.cfg.performer_features, q.shape[-1])
    return performer_attention(q, k, v, inputs, w)


def _check(cfg) -> None:
  m = cfg.performer_features
  if m % 2 and "rotate" in get_position(cfg.position).terms(cfg):
    raise ConfigError(f"position={cfg.position} rotates feature pairs: "
                      f"model.performer_features must be even, got {m}")


FIELDS = (
    Field("performer_features", 64, "number of random features m", positive, bad=(0,)),
    Field("performer_redraw", False, "draw new random features every training step",
          any_value),
)

VARIANT = KernelVariant(
    name="performer", doc="FAVOR+: softmax attention through positive random features, O(n m)",
    fields=FIELDS, check=_check, honours=frozenset({"rotate"}), masks=frozenset({"causal"}),
    probabilities=False, uses_scale=True, max_length=unbounded,
    module=lambda cfg: PerformerAttention(cfg))

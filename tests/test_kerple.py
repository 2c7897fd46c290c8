"""KERPLE (log variant) against its per-pair formula b_ij = -r1_h log(1 + r2_h |i - j|)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig
from model.masks import causal_mask, padding_mask
from model.positions.kerple import Kerple, positive, raw_for
from utils.errors import ConfigError

H = 2


def _cfg(**kw):
  base = dict(vocab_size=50, width=16, num_heads=H, num_layers=1, mlp_dim=32, dropout=0.0,
              scale="standard", position="kerple")
  base.update(kw)
  return ModelConfig.from_dict(base)


def _layer_params(layer, x, mask, n, r1, r2, seed=1):
  """Random projections (std 1/sqrt(fan-in)), and the given positive r1, r2 per head."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x, mask, jnp.arange(n))
  std = lambda s: s.shape[0] ** -0.5 if len(s.shape) >= 2 else 0.5
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(std(s) * rng.normal(size=s.shape), jnp.float32), shapes)
  params["params"]["relative_position"] = {"raw_r1": raw_for(r1), "raw_r2": raw_for(r2)}
  return params


def _reference(params, x, valid, causal, r1, r2):
  """The layer as loops: s_ij = q_i.k_j / sqrt(d) - r1_h log(1 + r2_h d_ij), softmax, out."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
  proj = lambda w: np.einsum("bnw,whd->bnhd", x, w["kernel"]) + w["bias"]
  q, k, v = proj(p["query"]), proj(p["key"]), proj(p["value"])
  b, n, h, d = q.shape
  out = np.zeros((b, n, h, d))
  for bi in range(b):
    for hi in range(h):
      for i in range(n):
        s = np.full(n, -np.inf)
        for j in range(n):
          if not valid[bi, j] or (causal and j > i):
            continue
          dist = i - j if causal else abs(i - j)
          s[j] = q[bi, i, hi] @ k[bi, j, hi] / math.sqrt(d) - r1[hi] * math.log(1 + r2[hi] * dist)
        a = np.exp(s - s.max())
        out[bi, i, hi] = (a / a.sum()) @ v[bi, :, hi]
  return np.einsum("bnhd,hdw->bnw", out, p["out"]["kernel"]) + p["out"]["bias"]


@pytest.mark.parametrize("causal", [False, True])
def test_layer_matches_per_pair_formula(causal):
  n = 9
  r1, r2 = np.array([1.7, 0.4]), np.array([0.3, 2.5])
  x = jax.random.normal(jax.random.PRNGKey(0), (2, n, 16))
  valid = np.ones((2, n), bool)
  valid[1, 6:] = False  # padded keys drop out of the sums
  mask = padding_mask(jnp.asarray(valid))
  if causal:
    mask = mask & causal_mask(n)
  layer = MultiHeadAttention(_cfg(causal=causal))
  params = _layer_params(layer, x, mask, n, r1, r2)
  got = jax.jit(layer.apply)(params, x, mask, jnp.arange(n))
  want = _reference(params, np.asarray(x, np.float64), valid, causal, r1, r2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_bias_per_pair_and_shift_invariant(causal):
  module, n = Kerple(num_heads=3), 12
  r1, r2 = np.array([0.5, 1.0, 3.0]), np.array([0.01, 0.2, 4.0])
  params = {"params": {"raw_r1": raw_for(r1), "raw_r2": raw_for(r2)}}
  bias = jax.jit(lambda pos: module.apply(params, pos, pos, causal).bias)
  got = np.asarray(bias(jnp.arange(n)))[0]
  for h in range(3):
    for i in range(n):
      for j in range(n):
        dist = max(i - j, 0) if causal else abs(i - j)
        np.testing.assert_allclose(got[h, i, j], -r1[h] * math.log1p(r2[h] * dist), rtol=1e-5,
                                   atol=1e-7)
  # a function of i - j only: the same at positions shifted by 1000
  np.testing.assert_array_equal(np.asarray(bias(jnp.arange(n) + 1000))[0], got)


def test_initialisation_is_alibi_near_the_diagonal():
  params = Kerple(num_heads=4).init(jax.random.PRNGKey(0), jnp.arange(3), jnp.arange(3))
  r1 = positive(params["params"]["raw_r1"])
  r2 = positive(params["params"]["raw_r2"])
  np.testing.assert_allclose(r1, [1.0] * 4, rtol=1e-5)
  np.testing.assert_allclose(r2, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8], rtol=1e-4)  # ALiBi's


def test_gradients_reach_r1_and_r2_and_they_stay_positive():
  n = 8
  x = jax.random.normal(jax.random.PRNGKey(0), (1, n, 16))
  mask = padding_mask(jnp.ones((1, n), bool))
  layer = MultiHeadAttention(_cfg())
  params = _layer_params(layer, x, mask, n, np.array([1.0, 2.0]), np.array([0.5, 0.1]))
  loss = lambda p: jnp.sum(layer.apply(p, x, mask, jnp.arange(n)) ** 2)
  grads = jax.jit(jax.grad(loss))(params)["params"]["relative_position"]
  assert np.all(np.abs(grads["raw_r1"]) > 0) and np.all(np.abs(grads["raw_r2"]) > 0)
  # a huge step against the positive direction: the coefficients stay positive and the bias
  # still penalises distance (strictly, and the more the farther)
  rel = params["params"]["relative_position"]
  far = {"params": {name: rel[name] - 1e6 for name in rel}}
  r = [positive(far["params"][name]) for name in ("raw_r1", "raw_r2")]
  assert all(bool(jnp.all(c > 0)) for c in r)
  bias = np.asarray(Kerple(num_heads=H).apply(far, jnp.arange(n), jnp.arange(n)).bias)[0]
  assert np.all(np.isfinite(bias))
  row = bias[:, 0, :]  # query 0: distances 0 .. n-1
  assert np.all(row[:, 0] == 0) and np.all(np.diff(row, axis=-1) < 0)


@pytest.mark.parametrize("attention", ["linear", "performer", "nystrom"])
def test_refused_by_kernels_without_a_logit_matrix(attention):
  with pytest.raises(ConfigError, match=rf"attention={attention} cannot apply position=kerple "
                     r"\(needs \['bias'\]\); use attention=softmax"):
    _cfg(attention=attention)

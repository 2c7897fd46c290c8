"""InfoNCE, FlatNCE, AM-Softmax on score matrices (objectives/contrastive.py)."""
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from objectives import contrastive as C
from utils.errors import ConfigError


def _logits(r=6, c=6, seed=0, scale=5.0):
  return scale * jax.random.normal(jax.random.PRNGKey(seed), (r, c))


@functools.partial(jax.jit, static_argnums=0)  # one compilation instead of op-by-op dispatch
def _grad(loss, logits, targets, allowed=None):
  return jax.grad(lambda s: loss(s, targets, allowed)[0])(logits)


def flatnce_positive_kept(logits, targets, allowed=None):
  """The bug REFERENCE.md warns about: the positive left inside the log-sum-exp."""
  del allowed
  gap = jax.nn.logsumexp(logits, axis=1) - C._target_logit(logits, targets)
  return jnp.mean(jnp.exp(gap - jax.lax.stop_gradient(gap))), {}


def np_infonce(s, t):
  """Reference in numpy: mean over rows of logsumexp(row) - row[target]."""
  s = np.asarray(s, np.float64)
  m = s.max(axis=1, keepdims=True)
  lse = (m + np.log(np.exp(s - m).sum(axis=1, keepdims=True)))[:, 0]
  return float(np.mean(lse - s[np.arange(len(t)), np.asarray(t)]))


def test_infonce_is_softmax_cross_entropy():
  s, t = _logits(), jnp.array([0, 2, 1, 5, 4, 3])
  want = optax.softmax_cross_entropy_with_integer_labels(s, t).mean()
  np.testing.assert_allclose(C.infonce(s, t)[0], want, rtol=1e-6)


def test_flatnce_value_is_one_and_gradient_is_that_of_log_xi():
  s, t = _logits(), jnp.arange(6)
  value, metrics = C.flatnce(s, t)
  np.testing.assert_allclose(value, 1.0, rtol=1e-6)
  # log xi_i written out: logsumexp over j != t_i, minus the positive
  def log_xi_mean(x):
    off = ~np.eye(6, dtype=bool)
    neg = jnp.where(off, x, -jnp.inf)
    return jnp.mean(jax.nn.logsumexp(neg, axis=1) - jnp.diag(x))
  np.testing.assert_allclose(_grad(C.flatnce, s, t), jax.grad(log_xi_mean)(s), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(metrics["log_xi"], log_xi_mean(s), rtol=1e-6)
  # its InfoNCE metric is log(1 + xi), the InfoNCE value
  np.testing.assert_allclose(metrics["infonce"], C.infonce(s, t)[0], rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_row_infonce_gradient_is_xi_over_one_plus_xi_times_flatnce(seed):
  s = _logits(8, 8, seed)
  t = jax.random.permutation(jax.random.PRNGKey(seed + 10), 8)
  xi = jnp.exp(C.log_xi(s, t))[:, None]
  g_info, g_flat = _grad(C.infonce, s, t), _grad(C.flatnce, s, t)
  # row i of the score matrix only enters row i's loss, so the gradients compare row by row
  np.testing.assert_allclose(g_info, xi / (1 + xi) * g_flat, rtol=1e-5, atol=1e-7)


def test_guard_positive_inside_logsumexp_gives_infonce_gradient():
  s, t = _logits(seed=3), jnp.arange(6)
  g_info = _grad(C.infonce, s, t)
  # the buggy version reproduces InfoNCE's gradient exactly ...
  np.testing.assert_allclose(_grad(flatnce_positive_kept, s, t), g_info, rtol=1e-5, atol=1e-7)
  # ... ours does not: it is larger by (1 + xi) / xi per row
  g_flat = _grad(C.flatnce, s, t)
  rel = jnp.linalg.norm(g_flat - g_info) / jnp.linalg.norm(g_info)
  assert rel > 0.05, float(rel)


def test_allowed_mask_equals_deleting_the_candidates():
  s, t = _logits(4, 5, seed=4), jnp.array([1, 0, 3, 4])
  allowed = jnp.ones((4, 5), bool).at[0, 2].set(False).at[2, 0].set(False)
  for loss in (C.infonce, C.flatnce):
    got = _grad(loss, s, t, allowed)
    assert float(jnp.abs(got[0, 2]) + jnp.abs(got[2, 0])) == 0.0  # no gradient to a removed one
  # row by row, the masked InfoNCE equals the one on the matrix without that column:
  # row 0 (target 1) loses column 2, row 2 (target 3) loses column 0 so its target becomes 2
  x = np.asarray(s)
  per_row = [np_infonce(np.delete(x[0:1], 2, axis=1), [1]), np_infonce(x[1:2], [0]),
             np_infonce(np.delete(x[2:3], 0, axis=1), [2]), np_infonce(x[3:4], [4])]
  np.testing.assert_allclose(C.infonce(s, t, allowed)[0], np.mean(per_row), rtol=1e-6)


def test_amsoftmax_is_infonce_with_a_margin_on_the_target():
  cos = jnp.tanh(_logits(5, 5, seed=5))
  t = jnp.arange(5)
  got, _ = C.amsoftmax(cos, t, scale=30.0, margin=0.25)
  want, _ = C.infonce(30.0 * cos - 30.0 * 0.25 * jnp.eye(5), t)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(C.amsoftmax(cos, t, scale=30.0, margin=0.0)[0],
                             C.infonce(30.0 * cos, t)[0], rtol=1e-6)


def _cfg(**kw):
  base = dict(name="infonce", scale=0.0, temperature=0.05, margin=0.0, pairing="cross",
              symmetric=False)
  base.update(kw)
  return C.LossConfig.from_config(types.SimpleNamespace(**base))


def test_pairings_and_symmetric():
  h = jax.random.normal(jax.random.PRNGKey(6), (4, 2, 8))
  x = np.asarray(h, np.float64)
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  cos = x[:, 0] @ x[:, 1].T
  cross, _ = C.contrastive_loss(h, _cfg())
  np.testing.assert_allclose(cross, np_infonce(20 * cos, np.arange(4)), rtol=1e-5)
  sym, _ = C.contrastive_loss(h, _cfg(symmetric=True))
  both = np_infonce(20 * cos, np.arange(4)) + np_infonce(20 * cos.T, np.arange(4))
  np.testing.assert_allclose(sym, both / 2, rtol=1e-5)
  # all: 8 embeddings, each against the 7 others; the partner of 2i is 2i + 1
  flat = x.reshape(8, 8)
  allv, _ = C.contrastive_loss(h, _cfg(pairing="all"))
  rows = [np_infonce(20 * flat[i:i + 1] @ np.delete(flat, i, axis=0).T,
                     [(i ^ 1) - ((i ^ 1) > i)]) for i in range(8)]
  np.testing.assert_allclose(allv, np.mean(rows), rtol=1e-5)


def test_scale_and_temperature_and_errors():
  assert _cfg().scale == pytest.approx(20.0)
  assert _cfg(scale=30.0).scale == 30.0
  with pytest.raises(ConfigError, match="valid names"):
    _cfg(name="nce")
  with pytest.raises(ConfigError, match="valid names"):
    _cfg(pairing="diagonal")
  with pytest.raises(ConfigError, match="temperature"):
    _cfg(temperature=0.0)
  with pytest.raises(ConfigError, match="symmetric"):
    _cfg(symmetric=True, pairing="all")

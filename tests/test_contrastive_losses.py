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
  """The bug docs/techniques.md section 6 warns about: the positive left inside the
  log-sum-exp."""
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


def np_log_xi(s, t):
  """Per row log sum_{j != t_i} exp(s_ij - s_it), in numpy."""
  s = np.asarray(s, np.float64)
  rows = np.arange(len(t))
  neg = s.copy()
  neg[rows, t] = -np.inf
  m = neg.max(axis=1)
  return m + np.log(np.exp(neg - m[:, None]).sum(axis=1)) - s[rows, t]


def np_flatnce_grad(s, t):
  """d/ds of mean_i log xi_i: the softmax over row i's negatives, -1 at its positive, / r."""
  s = np.asarray(s, np.float64)
  rows = np.arange(len(t))
  e = np.exp(s - s.max(axis=1, keepdims=True))
  e[rows, t] = 0.0
  g = e / e.sum(axis=1, keepdims=True)
  g[rows, t] = -1.0
  return g / len(t)


def test_flatnce_gradient_by_hand():
  # 2 rows, 3 candidates; row 0's positive is column 1, row 1's is column 0. Row 0's
  # negatives have equal scores, so its gradient is 1/2 on each of them (/ 2 rows)
  s = jnp.array([[0.3, 2.0, 0.3], [1.0, np.log(3.0), 0.0]])
  t = jnp.array([1, 0])
  want = np.array([[0.25, -0.5, 0.25], [-0.5, 0.375, 0.125]])  # row 1: exp 3 and 1 of 4
  np.testing.assert_allclose(_grad(C.flatnce, s, t), want, rtol=1e-6)
  np.testing.assert_allclose(np_flatnce_grad(s, t), want, rtol=1e-6)  # s is float32


def test_flatnce_gradient_is_that_of_log_xi_and_its_metrics():
  s, t = _logits(), jnp.array([3, 0, 1, 5, 2, 4])
  _, metrics = C.flatnce(s, t)
  np.testing.assert_allclose(_grad(C.flatnce, s, t), np_flatnce_grad(s, t), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(metrics["log_xi"], np.mean(np_log_xi(s, t)), rtol=1e-5)
  # its InfoNCE metric is log(1 + xi), the InfoNCE value
  np.testing.assert_allclose(metrics["infonce"], np_infonce(s, t), rtol=1e-5)
  np.testing.assert_allclose(np.mean(np.log1p(np.exp(np_log_xi(s, t)))), np_infonce(s, t),
                             rtol=1e-12)


def test_underflow_metric_flags_exactly_the_rows_whose_infonce_positive_gradient_is_zero():
  # 4 rows over 8 candidates, target 0, the 7 negatives equal at log(xi / 7): xi from 1e-3 to
  # 1e-12, two above 2^-24 (6e-8) and two below
  xis = np.array([1e-3, 1e-6, 1e-9, 1e-12])
  s = jnp.asarray(np.concatenate([np.zeros((4, 1)), np.repeat(np.log(xis / 7)[:, None], 7, 1)],
                                 axis=1), jnp.float32)
  t = jnp.zeros(4, jnp.int32)
  for loss in (C.infonce, C.flatnce):
    metrics = loss(s, t)[1]
    np.testing.assert_allclose(metrics["log_xi"], np.mean(np.log(xis)), rtol=1e-5)
    assert float(metrics["xi_underflow"]) == 0.5, loss.__name__
  # the mechanism the metric stands for: InfoNCE's positive gradient is 0 on the flagged rows
  # (float32), nonzero on the others; FlatNCE's is -1/4 (mean over 4 rows) on every row
  g_info, g_flat = np.asarray(_grad(C.infonce, s, t)), np.asarray(_grad(C.flatnce, s, t))
  flagged = np.log(xis) < np.log(C.XI_UNDERFLOW)
  assert np.all(g_info[flagged, 0] == 0) and np.all(g_info[~flagged, 0] < 0)
  np.testing.assert_allclose(g_flat[:, 0], -0.25, rtol=1e-6)


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


def np_amsoftmax(cos, t, scale, margin, allowed=None):
  """AM-Softmax in numpy: row i's logits scale * cos_ij, minus scale * margin at j = t_i only;
  candidates with allowed False left out of the log-sum-exp."""
  z = scale * np.asarray(cos, np.float64)
  rows = np.arange(len(t))
  z[rows, t] -= scale * margin
  if allowed is not None:
    z = np.where(allowed, z, -np.inf)
  m = z.max(axis=1, keepdims=True)
  lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
  return float(np.mean(lse - z[rows, t]))


def test_amsoftmax_margin_is_on_the_target_column():
  cos = np.asarray(jnp.tanh(_logits(5, 5, seed=5)))
  t = np.array([2, 0, 4, 1, 3])  # no row's target on the diagonal
  for margin in (0.25, 0.0):
    got, _ = C.amsoftmax(jnp.asarray(cos), jnp.asarray(t), scale=30.0, margin=margin)
    np.testing.assert_allclose(got, np_amsoftmax(cos, t, 30.0, margin), rtol=1e-5)
  # a margin on the diagonal instead would give a different value here
  assert abs(np_amsoftmax(cos, t, 30.0, 0.25) - np_infonce(
      30.0 * cos - 30.0 * 0.25 * np.eye(5), t)) > 0.1


def test_amsoftmax_with_pairing_all():
  # pairing=all: 8 embeddings, row i's positive is i ^ 1 (off the diagonal), itself excluded
  h = jax.random.normal(jax.random.PRNGKey(8), (4, 2, 8))
  flat = np.asarray(h, np.float64).reshape(8, 8)
  flat /= np.linalg.norm(flat, axis=1, keepdims=True)
  got, _ = C.contrastive_loss(h, _cfg(name="amsoftmax", scale=30.0, margin=0.3, pairing="all"))
  want = np_amsoftmax(flat @ flat.T, np.arange(8) ^ 1, 30.0, 0.3, ~np.eye(8, dtype=bool))
  np.testing.assert_allclose(got, want, rtol=1e-5)


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

"""benchmarks/flatnce_gradients.py: the measured per-row gradients of the project's InfoNCE and
FlatNCE against float64 formulas, and the float32 threshold below which InfoNCE's
positive-logit gradient is exactly zero (docs/results/flatnce_mechanism.md)."""
import numpy as np
import jax.numpy as jnp

from benchmarks import flatnce_gradients as fg
from objectives.contrastive import flatnce, infonce


def test_exact_gradients_are_related_by_xi_over_one_plus_xi():
  s = np.random.default_rng(0).normal(size=(5, 9)) * 3
  xi = np.exp(s[:, 1:] - s[:, :1]).sum(axis=1)
  g = fg.exact_gradients(s)
  np.testing.assert_allclose(g["infonce"], (xi / (1 + xi))[:, None] * g["flatnce"], rtol=1e-12)
  # and the InfoNCE one is the softmax minus the one-hot, written out
  p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(g["infonce"][:, 1:], p[:, 1:], rtol=1e-12)


def test_rows_have_the_asked_xi_and_float32_matches_the_formula():
  logits = fg.rows([10.0, 0.1, 1e-3], 8, jnp.float32)
  s = np.asarray(logits, np.float64)
  np.testing.assert_allclose(np.exp(s[:, 1:]).sum(axis=1), [10.0, 0.1, 1e-3], rtol=1e-6)
  exact = fg.exact_gradients(s)
  # atol: 1 / (1 + xi) - 1 loses ~1e-7 absolute to cancellation in float32 (xi = 1e-3: 3e-7)
  for name, fn in (("infonce", infonce), ("flatnce", flatnce)):
    np.testing.assert_allclose(fg.measured_gradients(logits, fn), exact[name], rtol=1e-5,
                               atol=1e-6)


def test_infonce_positive_gradient_vanishes_below_float32_epsilon():
  # 1 / (1 + xi) rounds to 1 once xi < 2^-24: the positive's gradient is exactly 0 there,
  # FlatNCE's stays -1
  logits = fg.rows([2.0 ** -20, 2.0 ** -26], 8, jnp.float32)
  info = fg.measured_gradients(logits, infonce)
  flat = fg.measured_gradients(logits, flatnce)
  assert info[0, 0] < 0 and info[1, 0] == 0.0
  np.testing.assert_allclose(flat[:, 0], -1.0, rtol=1e-6)

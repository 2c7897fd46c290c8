"""GELU approximations: the constants come out of a minimax fit of Phi
(docs/techniques.md section 5).

The post derives both elementary approximations of Phi (the standard normal CDF),
  Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + a x^3)))   and   Phi(x) ~ sigmoid(b x),
by choosing the constant that minimises the maximum error over x. Redoing that search must
give the constants of model/activations.py to three significant figures.
"""
import math

import jax.numpy as jnp
import numpy as np
from scipy import optimize, special

from model.activations import (GELU_SIGMOID_C, GELU_TANH_C, gelu, gelu_sigmoid, gelu_tanh,
                               squareplus)

# The errors vanish at 0 and at +-infinity and peak at |x| of order 1-3; a fine grid on
# [-8, 8] locates each maximum to ~1e-4 in x, far finer than three significant figures need.
X = np.linspace(-8.0, 8.0, 160001)
PHI = special.ndtr(X)


def _max_error_tanh(a):
  return np.max(np.abs(PHI - 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (X + a * X ** 3)))))


def _max_error_sigmoid(b):
  return np.max(np.abs(PHI - special.expit(b * X)))


def _sig3(v):
  return float(f"{v:.3g}")  # three significant figures


def _minimax(f, lo, hi):
  res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
  assert res.success
  return res.x, res.fun


def test_tanh_constant_is_the_minimax_one():
  a, err = _minimax(_max_error_tanh, 0.0, 0.1)
  assert _sig3(a) == _sig3(GELU_TANH_C) == 0.0447, a
  assert err < 2e-4  # the tanh form is accurate to ~1.8e-4 everywhere
  assert _max_error_tanh(GELU_TANH_C) < 1.001 * err  # and the library constant is as good


def test_sigmoid_constant_is_the_minimax_one():
  b, err = _minimax(_max_error_sigmoid, 1.0, 2.5)
  assert _sig3(b) == _sig3(GELU_SIGMOID_C) == 1.70, b
  assert err < 1e-2  # the sigmoid form is ~50x less accurate (~9.5e-3)
  assert _max_error_sigmoid(GELU_SIGMOID_C) < 1.01 * err  # 1.702 vs the optimum 1.7017


def test_activations_match_their_formulas():
  x = np.linspace(-6.0, 6.0, 1001).astype(np.float32)
  xd = x.astype(np.float64)
  c = math.sqrt(2.0 / math.pi)
  close = lambda got, want: np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5,
                                                       atol=1e-6)
  close(gelu(jnp.asarray(x)), xd * special.ndtr(xd))
  close(gelu_tanh(jnp.asarray(x)), 0.5 * xd * (1 + np.tanh(c * (xd + 0.044715 * xd ** 3))))
  close(gelu_sigmoid(jnp.asarray(x)), xd * special.expit(1.702 * xd))
  close(squareplus(jnp.asarray(x)), (xd + np.sqrt(xd * xd + 4.0)) / 2)
  close(squareplus(jnp.asarray(x), b=1.0), (xd + np.sqrt(xd * xd + 1.0)) / 2)
  # both approximations stay within |x| times their error on Phi of the exact GELU
  exact = xd * special.ndtr(xd)
  assert np.all(np.abs(np.asarray(gelu_tanh(jnp.asarray(x))) - exact) <= 2e-4 * np.abs(xd) + 1e-6)
  assert np.all(np.abs(np.asarray(gelu_sigmoid(jnp.asarray(x))) - exact) <= 1e-2 * np.abs(xd) + 1e-6)

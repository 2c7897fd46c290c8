"""Activations (docs/techniques.md section 5). Pure functions, chosen by `model.activation`."""
from __future__ import annotations

from utils.errors import ConfigError

import math

import jax
import jax.numpy as jnp

GELU_TANH_C = 0.044715
GELU_SIGMOID_C = 1.702


def gelu(x):
  """Exact x * Phi(x) = x (1 + erf(x / sqrt 2)) / 2.

  Through erf rather than jax.nn.gelu's erfc: XLA's CPU erfc has branches and an exp, which
  made the activation a visible part of a CPU train step; erf is one rational polynomial.
  They differ by < 1e-6 in absolute value (tests/test_gelu.py).
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x):
  return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + GELU_TANH_C * x ** 3)))


def gelu_sigmoid(x):
  return x * jax.nn.sigmoid(GELU_SIGMOID_C * x)


def squareplus(x, b: float = 4.0):
  return 0.5 * (x + jnp.sqrt(x * x + b))


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "gelu_sigmoid": gelu_sigmoid,
    "squareplus": squareplus,
}


def get_activation(name: str):
  if name not in ACTIVATIONS:
    raise ConfigError(f"unknown activation {name!r}; valid names: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]

"""Test configuration: run from the repository root, on the CPU, with float32 matmuls."""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

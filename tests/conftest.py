"""Test configuration: run from the repository root, on the CPU, with float32 matmuls; a test
skipped because an optional peer library is missing is named in the terminal summary."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's backend optimisations cost more compile time than they save on the tests' tiny
# programs (the suite compiles hundreds of them), and its CPU loop emitters compile a fused
# kernel in about half the time of the MLIR fusion emitters (values move in the last bits);
# numerics are compared within a session, so every test process (subprocesses inherit it)
# compiles the same way. The pins in tests/golden/ were recorded under these flags.
# ATTENTION_LAB_TEST_XLA_OPT=1 keeps XLA's defaults.
if os.environ.get("ATTENTION_LAB_TEST_XLA_OPT") != "1":
  for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if _flag not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
# the summary line naming skipped peer checks (tests/ is on sys.path, as for entry_points)
from peer_skips import pytest_terminal_summary  # noqa: E402,F401
import module_weights  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The entry-point tests run train.py / evaluate.py in subprocesses; they share one persistent
# compilation cache for the session (tests/entry_points.py). Made here, in the controlling
# process, so that parallel workers (pytest -n 2) inherit the same directory.
CACHE_VAR = "ATTENTION_LAB_TEST_JAX_CACHE"


def pytest_configure(config):
  if not hasattr(config, "workerinput") and CACHE_VAR not in os.environ:
    config._jax_cache = os.environ[CACHE_VAR] = tempfile.mkdtemp(prefix="jax-cache-")


def pytest_unconfigure(config):
  cache = getattr(config, "_jax_cache", None)
  if cache:
    shutil.rmtree(cache, ignore_errors=True)
    os.environ.pop(CACHE_VAR, None)



def pytest_collection_modifyitems(config, items):
  # heaviest modules first, so that the two workers end together (tests/module_weights.py)
  items[:] = module_weights.heaviest_first(items, module_weights.load())

"""Pins: values recorded from an earlier commit, compared exactly on the machine that recorded them.

A pin file in tests/golden/ is written by the test that checks it when the environment has
ATTENTION_LAB_WRITE_GOLDEN=1 (run that on the commit whose numbers are to be kept, and say so
in its message). Bit-identity is a claim about one CPU model, one XLA build and one core
count: with the CPU, jax version and number of usable cores that recorded the file the
comparison is exact; elsewhere floats may differ by a relative 1e-5 plus an absolute 1e-6 (a
different CPU may pick other vector kernels, another core count splits reductions
differently), and a failure says which comparison was made.

The files were recorded in a test session, that is under the XLA flags tests/conftest.py sets
(--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false): a pin compares
compiled programs built the same way.

Which commit recorded each file: variants.json at 516ef53, before the restructuring into
self-describing variants and tasks (the restructured code matched it exactly), and at 516ef53
again each time one of the flags above was added; the second time on an AMD EPYC, where
516ef53 under the first flag alone matched the previous file (recorded on an Intel Xeon)
within the tolerance, and HEAD matched 516ef53 exactly under either set of flags. The two
smoke runs under both flags at the commit that added the second; they matched the previous
files (recorded under the first flag alone, after the weight-decay mask stopped decaying the
per-head query/key/value biases, a deliberate numeric change) within the tolerance. The
quickstart's metrics.jsonl and eval.json had been checked bit-identical across the
restructuring before that, under the default flags, as a user runs it.
"""
from __future__ import annotations

import json
import os
import platform

import jax

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
WRITE = os.environ.get("ATTENTION_LAB_WRITE_GOLDEN") == "1"


def _machine() -> dict:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  except OSError:
    pass
  # XLA:CPU splits its reductions by the cores it may use: the same CPU with another core
  # count (a container's limit, taskset) rounds differently in the last bits
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")  # not on macOS
           else os.cpu_count())
  return {"cpu": cpu, "jax": jax.__version__, "cores": cores}


# Rank statistics move in steps: on another CPU a last-digit change of two nearly equal
# similarities can swap their ranks, which moves a Spearman correlation over 64 pairs by
# ~1e-3 while every float it is computed from agrees to 1e-5. Off the recording machine such
# a key is compared to this absolute tolerance (a few swaps), exactly on it.
RANK_KEYS = {"spearman": 5e-3}


def _close(a, b, exact: bool, where: str = "") -> list[str]:
  """Differences between two JSON-like values: exact, or floats to rtol 1e-5 + atol 1e-6
  (RANK_KEYS to their own absolute tolerance).

  The absolute floor is for logits near zero, where another CPU's summation order moves the
  last digits by ~1e-7 while the relative change looks large."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = [f"{where}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
    return out + [d for k in sorted(set(a) & set(b)) for d in _close(a[k], b[k], exact,
                                                                     f"{where}.{k}")]
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f"{where}: {len(a)} vs {len(b)} items"]
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, exact, f"{where}[{i}]")]
  if isinstance(a, float) and isinstance(b, float) and not exact:
    rank_tol = RANK_KEYS.get(where.rsplit(".", 1)[-1])
    ok = (abs(a - b) <= rank_tol if rank_tol is not None else
          abs(a - b) <= 1e-5 * max(abs(a), abs(b)) + 1e-6)
    return [] if ok else [f"{where}: {a!r} vs {b!r}"]
  return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def check(file: str, got: dict) -> None:
  path = os.path.join(GOLDEN, file)
  if WRITE:
    os.makedirs(GOLDEN, exist_ok=True)
    with open(path, "w") as f:
      json.dump(dict(got, machine=_machine()), f, indent=1, sort_keys=True)
    return
  with open(path) as f:
    want = json.load(f)
  exact = want.pop("machine") == _machine()
  diffs = _close(got, want, exact)
  assert not diffs, (f"{len(diffs)} values differ from {file} "
                     f"({'exact' if exact else 'rtol 1e-5 + atol 1e-6: another CPU, jax or core count'}):\n" +
                     "\n".join(diffs[:20]))

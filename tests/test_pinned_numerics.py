"""Refactors must not change the numbers: outputs pinned to values recorded before them.

Two pins, both against JSON files in tests/golden/ written by this file (run it with
ATTENTION_LAB_WRITE_GOLDEN=1 on the commit whose numbers are to be kept). variants.json was
recorded at 516ef53, before the restructuring into self-describing variants and tasks; the
smoke runs were recorded there too and re-recorded once, deliberately, when the weight-decay
mask stopped decaying the per-head query/key/value biases (the commit that fixed it):

* every model variant's forward pass (with dropout on) on fixed tokens and its parameter tree
  (names and shapes, so checkpoints keep loading);
* the smoke runs of both experiment configs through train.py: metrics.jsonl (without the
  wall-clock fields) and the end-of-run evaluation.

Bit-identity is a claim about one CPU model and one XLA build: on the machine and jax version
that recorded the file the comparison is exact; elsewhere it allows a relative 1e-5 plus an
absolute 1e-6 (a different CPU may pick other vector kernels) and says so in the failure.
"""
from __future__ import annotations

import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from entry_points import metric_rows, run

from model.config import ModelConfig
from model.encoder import MlmModel

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
WRITE = os.environ.get("ATTENTION_LAB_WRITE_GOLDEN") == "1"

BASE = dict(width=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=64, dropout=0.1)
# name -> model fields on top of BASE. t5 and alibi with a power-of-two head count keep their
# recorded behaviour under the options that reproduce it (t5: one table per layer).
VARIANTS = {
    "quickstart": dict(position="rope", scale="logn", logn_n0=512),
    "rope_half": dict(position="rope", rope_layout="half", scale="standard"),
    "rope_ntk": dict(position="rope", rope_scaling="ntk", rope_scaling_factor=4.0),
    "rope_pi": dict(position="rope", rope_scaling="pi", rope_scaling_factor=2.0),
    "rope_rerope": dict(position="rope", rope_scaling="rerope", rerope_window=6),
    "causal_logn_causal": dict(position="rope", causal=True, scale="logn_causal", logn_n0=8),
    "scale_none": dict(position="rope", scale="none"),
    "nope": dict(position="none", scale="standard"),
    "learned": dict(position="learned"),
    "sinusoidal_add": dict(position="sinusoidal"),
    "sinusoidal_mul": dict(position="sinusoidal", sinusoidal_mode="mul"),
    "shaw": dict(position="shaw", relative_clip=4),
    "xl": dict(position="xl"),
    "deberta": dict(position="deberta", relative_clip=4),
    "t5_per_layer": dict(position="t5", scale="none", t5_num_buckets=8, t5_max_distance=16,
                         t5_shared=False),
    "alibi_4_heads": dict(position="alibi", causal=True),
    "linear": dict(attention="linear", position="rope"),
    "performer": dict(attention="performer", position="rope", performer_features=16),
    "nystrom": dict(attention="nystrom", position="rope", nystrom_landmarks=4),
    "synthesizer_dense": dict(attention="synthesizer_dense", position="learned"),
    "synthesizer_factorized": dict(attention="synthesizer_factorized", position="learned"),
    "pre_norm_window": dict(position="rope", norm="pre", window=5),
    "rmsnorm_squareplus": dict(position="rope", norm="rmsnorm", activation="squareplus"),
    "attention_dropout": dict(position="rope", attention_dropout=0.2),
}
VOCAB, LENGTH = 40, 24


def _machine() -> dict:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  except OSError:
    pass
  return {"cpu": cpu, "jax": jax.__version__}


def _tokens():
  rng = np.random.RandomState(0)
  tokens = rng.randint(5, VOCAB, size=(2, LENGTH)).astype(np.int32)
  tokens[1, LENGTH - 7:] = 0  # [PAD] = 0: the second row is padded
  return tokens


def _fields(extra: dict) -> dict:
  known = {f for f in ModelConfig.__dataclass_fields__}
  # fields added later (t5_shared) are left out on a commit that predates them: its default
  # was the only behaviour then
  return {k: v for k, v in dict(BASE, **extra).items() if k in known}


def _forward(name: str) -> dict:
  cfg = ModelConfig(vocab_size=VOCAB, **_fields(VARIANTS[name]))
  model = MlmModel(cfg)
  tokens = _tokens()
  valid = tokens != 0

  # one compiled program per variant (init and forward together): the suite's budget
  @jax.jit
  def init_and_forward(key):
    params = model.init({"params": key}, tokens, valid)["params"]
    return params, model.apply({"params": params}, tokens, valid, deterministic=False,
                               rngs={"dropout": jax.random.PRNGKey(1)})

  params, logits = init_and_forward(jax.random.PRNGKey(0))
  logits = np.asarray(logits, np.float64)
  weights = np.random.RandomState(1).standard_normal(logits.shape)
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"weighted_sum": float(np.sum(logits * weights)),
          "abs_sum": float(np.sum(np.abs(logits))),
          "first_row": [float(x) for x in logits[0, 0, :8]],
          "parameters": {jax.tree_util.keystr(p): list(np.shape(v)) for p, v in paths}}


def _close(a, b, exact: bool, where: str = "") -> list[str]:
  """Differences between two JSON-like values: exact, or floats to rtol 1e-5 + atol 1e-6.

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
    ok = abs(a - b) <= 1e-5 * max(abs(a), abs(b)) + 1e-6
    return [] if ok else [f"{where}: {a!r} vs {b!r}"]
  return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def _check(file: str, got: dict) -> None:
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
                     f"({'exact' if exact else 'rtol 1e-5 + atol 1e-6: another CPU or jax'}):\n" +
                     "\n".join(diffs[:20]))


def test_every_variant_forward_and_parameter_tree_pinned():
  _check("variants.json", {name: _forward(name) for name in VARIANTS})


@pytest.mark.parametrize("config, result", [
    ("configs/mlm_extrapolation.py", "eval.json"),
    ("configs/contrastive_batch.py", "sts_eval.json"),
])
def test_smoke_run_metrics_and_evaluation_pinned(tmp_path, config, result):
  w = str(tmp_path / "w")
  run("train.py", f"--config={config}:smoke", f"--workdir={w}", "--progress=false")
  with open(os.path.join(w, result)) as f:
    evaluation = json.load(f)
  name = os.path.basename(config).removesuffix(".py")
  _check(f"smoke_{name}.json", {"metrics": metric_rows(w), "evaluation": evaluation})

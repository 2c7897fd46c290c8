"""What an accelerator does with our MLM step: model FLOPs utilisation in f32 and bf16, XLA's
attention vs the fused kernel, evaluation tokens/s at long lengths; one process, a few minutes.

  python benchmarks/gpu.py [--out docs/results/performance_gpu.md]     # on a GPU machine
  python benchmarks/gpu.py --quick                                    # any machine: a check
  bash benchmarks/gpu.sh                                              # the same, timed, logged

Three tables, every ratio measured in this process:

1. Train step of two models (the length study's width 128 / 2 layers at batch 64 x 64, and the
   throughput model, width 256 / 4 layers / MLP 1024 at batch 32 x 128, 512, 2048) for each
   compute dtype (model.dtype: float32, bfloat16) and attention implementation
   (model.attention_impl: einsum, fused, and cudnn where it applies: bf16 on an NVIDIA GPU):
   ms per step, tokens/s, and the model FLOP/s as a ratio to the same-dtype matmul peak
   measured here (MFU). Model FLOPs are the matrix products counted from the shapes
   (benchmarks/mlm_throughput.matmul_flops), so the ratio compares implementations fairly.
2. The matmul peaks themselves (n x n x n, f32 and bf16). On a GPU f32 matmuls use TF32 unless
   jax_default_matmul_precision says otherwise; the page prints what was in force.
3. Evaluation (forward only, the MLM eval step of evaluation/mlm_by_length) of the study model
   at 1024, 2048 and 4096 tokens: tokens/s and MFU, einsum vs fused.

A configuration that the model refuses (a ConfigError, e.g. cudnn in f32 or on a CPU) or
that fails (out of memory) is marked in its cell, with the reason in a numbered note under the
tables, not skipped silently. --quick shrinks every shape so the script runs in about a minute on a CPU: a check
that it works, not a measurement.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks.common import (STUDY, THROUGHPUT, best_time, matmul_peak_flops,  # noqa: E402
                               report)
from benchmarks.mlm_throughput import (compiled_train_step, matmul_flops,  # noqa: E402
                                       random_tokens)
from utils.errors import first_line  # noqa: E402

DTYPES = ("float32", "bfloat16")
IMPLS = ("einsum", "fused", "cudnn")


def load(spec: str, dtype: str, impl: str):
  from utils.cli import load_config_file
  config = load_config_file(spec)
  config.model.dtype = dtype
  config.model.attention_impl = impl
  return config


REASONS: list[str] = []  # refusals and failures, printed under the tables


def note(kind: str, error: Exception) -> str:
  """The cell of a refused or failed configuration: a footnote number; the reason below."""
  line = f"{kind}: {first_line(error)}"
  if line not in REASONS:
    REASONS.append(line)
  return f"{kind} [{REASONS.index(line) + 1}]"


def timed(measure):
  """measure() -> seconds, with the model's refusals (ConfigError, at configuration or at
  trace time) and the backend's failures (out of memory) as table cells."""
  from utils.errors import UserError
  try:
    return measure()
  except UserError as e:
    return note("refused", e)
  except Exception as e:  # noqa: BLE001  (out of memory and backend errors go in the table)
    return note(f"failed ({type(e).__name__})", e)


def train_cell(spec, dtype, impl, length, batch, vocab, peaks, quick):
  config = load(spec, dtype, impl)

  def measure():
    run, _ = compiled_train_step(config, length, batch, vocab)
    return best_time(run, repeats=2 if quick else 5, min_time=0.05 if quick else 0.5)
  seconds = timed(measure)
  if isinstance(seconds, str):
    return seconds
  from data.mlm import num_predictions
  flops = matmul_flops(config.model, batch, length, num_predictions(length, config.data.mask_rate),
                       vocab)
  return (f"{1e3 * seconds:.1f} ms, {batch * length / seconds:,.0f} tok/s, "
          f"**{100 * flops / seconds / peaks[dtype]:.0f}%**")


def eval_cell(spec, dtype, impl, length, batch, vocab, peaks, quick):
  from evaluation.mlm_by_length import make_eval_step
  from model.encoder import MlmModel
  from training import mlm
  config = load(spec, dtype, impl)

  def measure():
    model = MlmModel(mlm.model_config(config, vocab))
    params = mlm.init_params(model, jax.random.PRNGKey(0), length)
    step = make_eval_step(model, vocab, config.data.mask_rate)
    tokens = random_tokens(batch, length, vocab)
    return best_time(step, params, tokens, jax.random.PRNGKey(1),
                     repeats=2 if quick else 5, min_time=0.05 if quick else 0.5)
  seconds = timed(measure)
  if isinstance(seconds, str):
    return seconds
  from data.mlm import num_predictions
  flops = matmul_flops(config.model, batch, length,
                       num_predictions(length, config.data.mask_rate), vocab) / 3  # forward only
  return (f"{batch * length / seconds:,.0f} tok/s, "
          f"**{100 * flops / seconds / peaks[dtype]:.0f}%**")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--quick", action="store_true", help="tiny shapes: checks the script runs")
  p.add_argument("--vocab", type=int, default=8000)
  p.add_argument("--out", default="")
  args = p.parse_args()
  start = time.time()
  quick = args.quick
  import jax.numpy as jnp
  n = 256 if quick else (8192 if jax.default_backend() == "gpu" else 2048)
  peaks = {d: max(matmul_peak_flops(n, getattr(jnp, d)) for _ in range(2)) for d in DTYPES}
  vocab = 500 if quick else args.vocab
  shrink = ",width=32,layers=1,heads=2,mlp=64" if quick else ""
  train_rows = [("study (128 x 2)", STUDY + (":" + shrink[1:] if shrink else ""), 64,
                 8 if quick else 64)]
  for length in ((32, 64) if quick else (128, 512, 2048)):
    train_rows.append(("throughput (256 x 4)", THROUGHPUT + shrink, length, 4 if quick else 32))
  lines = [f"Backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); "
           f"matmul precision: {jax.config.jax_default_matmul_precision or 'default'}; "
           f"vocabulary {vocab}." + (" QUICK: tiny shapes, not a measurement." if quick else ""),
           "", f"Matmul peak ({n}^3, best of two): " +
           ", ".join(f"{d} {peaks[d] / 1e12:.2f} TFLOP/s" for d in DTYPES), "",
           "### Train step: ms, tokens/s, **MFU** (model FLOPs / same-dtype matmul peak)", "",
           "| model | batch x length | " + " | ".join(f"{d} {i}" for d in DTYPES for i in IMPLS)
           + " |", "|---|---|" + "---|" * (len(DTYPES) * len(IMPLS))]
  for name, spec, length, batch in train_rows:
    cells = [train_cell(spec, d, i, length, batch, vocab, peaks, quick)
             for d in DTYPES for i in IMPLS]
    lines.append(f"| {name} | {batch} x {length} | " + " | ".join(cells) + " |")
    print(lines[-1], flush=True)
  lines += ["", "### Evaluation (forward): tokens/s, **MFU**, study model", "",
            "| batch x length | " + " | ".join(f"{d} {i}" for d in DTYPES for i in IMPLS) + " |",
            "|---|" + "---|" * (len(DTYPES) * len(IMPLS))]
  spec = STUDY + (":" + shrink[1:] if shrink else "")
  for length in ((128, 256) if quick else (1024, 2048, 4096)):
    batch = 2 if quick else max(1, 65536 // length)
    cells = [eval_cell(spec, d, i, length, batch, vocab, peaks, quick)
             for d in DTYPES for i in IMPLS]
    lines.append(f"| {batch} x {length} | " + " | ".join(cells) + " |")
    print(lines[-1], flush=True)
  lines += ["", *(f"[{i}] {r}" for i, r in enumerate(REASONS, 1))]
  report(lines, start, args.out, "MLM step on an accelerator", "benchmarks/gpu.py", sys.argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Evaluation throughput at long lengths, what model.remat trades, and 1 vs 8 host devices:
three measurements of the performance page, each in one process (or one interleaved run).

  python benchmarks/performance.py --section eval [--out FILE]      # ~1 minute
  python benchmarks/performance.py --section remat [--out FILE]     # ~2 minutes (4 compiles)
  python benchmarks/performance.py --section devices [--out FILE]   # ~2 minutes
  python benchmarks/performance.py --section gap [--out FILE]       # benchmarks/step_gap.py
  python benchmarks/performance.py --section eval --quick          # tiny shapes: a check

eval: the length study's model (configs/mlm_extrapolation.py defaults: width 128, 2 layers)
  forward only (the MLM eval step of evaluation/mlm_by_length), at 1024, 2048 and 4096
  tokens, 16,384 tokens a call: tokens/s and model FLOP/s as a ratio to the f32 matmul peak
  of this process, XLA's attention (einsum) and the fused kernel (benchmarks/gpu.eval_cell).
remat: the throughput model (width 256, 4 layers, MLP 1024) trained at 512 tokens, batch 8,
  model.remat false vs true: XLA's temporary memory of the compiled step
  (memory_analysis().temp_size_in_bytes) and the step time, timed in turn, and their ratios
  (target: memory <= 1/3 at <= 1.35x the time);
  what each block adds to the memory (against the same step with one block), and what a
  block keeps for the backward pass without remat (only its input with it).
devices: the throughput model's step at batch 32 x 128 on 1 and on 8 host devices
  (XLA_FLAGS=--xla_force_host_platform_device_count, mesh.data = the device count, the same
  global batch), each in a subprocess, alternated. On a CPU the 8 devices share its cores:
  informational, it checks the sharded step's overhead, not a speed-up.
gap: the throughput model's step at batch 32 x 128 and 64 with one piece removed at a time
  (dropout, RoPE, log-n, the mask, norm parameters, biases, the embedding's gradient, the
  MLM head, the optimizer update), timed interleaved with the bare-products stand-in of
  benchmarks/mlm_throughput.py: where the step's time beyond the stand-in goes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import step_gap  # noqa: E402
from benchmarks.common import (STUDY, THROUGHPUT, best_time, interleaved_times,  # noqa: E402
                               matmul_peak_flops, report)

TINY = ",width=32,layers=2,heads=2,mlp=64"  # --quick: every model shrunk to this
MiB = 2 ** 20


def spec(base: str, quick: bool) -> str:
  if not quick:
    return base
  return base + (TINY if ":" in base else ":" + TINY[1:])


def eval_section(args) -> list[str]:
  from benchmarks import gpu
  quick = args.quick
  peak = max(matmul_peak_flops(256 if quick else 2048) for _ in range(2))
  tokens = 512 if quick else 16384
  impls = ("einsum", "fused")
  lines = [f"Study model ({STUDY} defaults{', QUICK: shrunk' if quick else ''}), vocabulary "
           f"{args.vocab}, forward only (MLM eval step), {tokens:,} tokens a call. f32 matmul "
           f"peak (best of two): {peak / 1e9:.1f} GFLOP/s.", "",
           "| batch x length | " + " | ".join(f"{i}: tokens/s, **ratio to peak**" for i in impls)
           + " |", "|---|" + "---|" * len(impls)]
  for length in ((128, 256, 512) if quick else (1024, 2048, 4096)):
    batch = max(1, tokens // length)
    cells = [gpu.eval_cell(spec(STUDY, quick), "float32", i, length, batch, args.vocab,
                           {"float32": peak}, quick) for i in impls]
    lines.append(f"| {batch} x {length} | " + " | ".join(cells) + " |")
    print(lines[-1], flush=True)
  lines += ["", "Model FLOPs: the forward's matrix products counted from the shapes "
            "(benchmarks/mlm_throughput.matmul_flops / 3), attention's two products included.",
            *(f"[{i}] {r}" for i, r in enumerate(gpu.REASONS, 1))]
  return lines


def kept_per_layer(m, batch: int, length: int) -> dict:
  """MiB of the float32 activations one block keeps for its backward pass (the large ones),
  by what they are; with remat a block keeps only its input."""
  t = batch * length
  probs = batch * m.num_heads * length * length
  return {"block input (all remat keeps)": t * m.width * 4 / MiB,
          "attention logits / probabilities (each)": probs * 4 / MiB,
          "q, k, v, attention output, residuals, norms (each)": t * m.width * 4 / MiB,
          "MLP hidden, before and after GELU (each)": t * m.mlp_dim * 4 / MiB}


ITEMSIZE = {"bool": 1, "u8": 1, "s8": 1, "i8": 1, "bf16": 2, "f16": 2, "f32": 4, "s32": 4,
            "i32": 4, "u32": 4, "f64": 8, "s64": 8, "i64": 8, "u64": 8}


def saved_residual_bytes(config, length: int, batch: int, vocab: int) -> int:
  """Bytes of what JAX's autodiff saves from the MLM loss's forward pass for its backward
  (the arguments, i.e. the parameters, not counted), traced on shapes only: what model.remat
  changes before XLA compiles anything. (jax.ad_checkpoint.print_saved_residuals is the
  public way to list them; its lines start with the dtype and shape.)"""
  import contextlib
  import io
  import re

  import jax
  from jax.ad_checkpoint import print_saved_residuals

  from model.encoder import MlmModel
  from training import mlm
  model = MlmModel(mlm.model_config(config, vocab))
  params = jax.eval_shape(lambda: mlm.init_params(model, jax.random.PRNGKey(0), length))
  loss = mlm.mlm_loss_fn(model, config.data.mask_rate)
  listing = io.StringIO()
  with contextlib.redirect_stdout(listing):
    print_saved_residuals(lambda p, t: loss(p, t, jax.random.PRNGKey(1))[0], params,
                          jax.ShapeDtypeStruct((batch, length), np.int32))
  total = 0
  for line in listing.getvalue().splitlines():
    found = re.match(r"\s*(\w+)\[([\d,]*)\]", line)
    if found and "from the argument" not in line:
      shape = [int(d) for d in found.group(2).split(",") if d]
      total += ITEMSIZE[found.group(1)] * int(np.prod(shape, dtype=np.int64))
  return total


def remat_section(args) -> list[str]:
  from benchmarks.mlm_throughput import compiled_train_step
  from utils.cli import load_config_file
  quick = args.quick
  length, batch = (64, 2) if quick else (512, args.remat_batch)

  def config_of(remat: bool, layers=None):
    config = load_config_file(spec(THROUGHPUT, quick))
    config.model.remat = remat
    config.model.num_layers = layers or config.model.num_layers
    return config

  temp = lambda compiled: compiled.memory_analysis().temp_size_in_bytes
  runs, memory, one_block, saved = {}, {}, {}, {}
  for remat in (False, True):
    saved[remat] = saved_residual_bytes(config_of(remat), length, batch, args.vocab)
    run, compiled = compiled_train_step(config_of(remat), length, batch, args.vocab)
    runs[remat], memory[remat] = run, temp(compiled)
    # the same step with one block: what each further block adds (compiled, not run)
    one_block[remat] = temp(compiled_train_step(config_of(remat, 1), length, batch,
                                                args.vocab)[1])
  rounds = 2 if quick else args.rounds
  times = {k: float(np.median(v)) for k, v in
           interleaved_times(runs, rounds, 1 if quick else 2).items()}
  m = config_of(False).model
  per_block = {k: (memory[k] - one_block[k]) / max(1, m.num_layers - 1) for k in memory}
  lines = [f"Throughput model ({spec(THROUGHPUT, quick)}), batch {batch} x {length}, "
           f"vocabulary {args.vocab}; {rounds} rounds of the two steps in turn, median.", "",
           "| model.remat | residuals JAX saves (MiB) | XLA temp memory (MiB) | of which per "
           "block (MiB) | ms / step | memory ratio | time ratio |",
           "|---|---|---|---|---|---|---|"]
  for remat in (False, True):
    lines.append(f"| {str(remat).lower()} | {saved[remat] / MiB:,.1f} | "
                 f"{memory[remat] / MiB:,.1f} | "
                 f"{per_block[remat] / MiB:,.1f} | {1e3 * times[remat]:,.0f} | "
                 f"**{memory[remat] / memory[False]:.2f}** | "
                 f"**{times[remat] / times[False]:.2f}** |")
  lines += ["", f"Target: memory ratio <= 0.33 at time ratio <= 1.35. 'Residuals JAX saves': "
            "what autodiff keeps from the forward pass for the backward (print_saved_residuals, "
            "parameters not counted), before XLA schedules anything. 'Per block': (temp memory "
            f"of the {m.num_layers}-block step - that of the same step with 1 block) / "
            f"{m.num_layers - 1}, each compiled. With remat each block's recomputation "
            "depends on the gradient of its output (model/remat.py), so XLA runs it in the "
            "backward pass, one block at a time; with jax.checkpoint (nn.remat) XLA:CPU had "
            "scheduled it beside the forward pass, for a memory ratio of 0.97. What one block "
            "keeps for the backward pass without remat, float32 MiB (with remat it should keep "
            "only its input):", ""]
  lines += [f"- {k}: {v:,.1f}" for k, v in kept_per_layer(m, batch, length).items()]
  return lines


def device_step_seconds(devices: int, quick: bool, vocab: int) -> float:
  """(in a process with `devices` host devices) the train step over a mesh of all of them."""
  import jax

  from benchmarks.mlm_throughput import compiled_train_step
  from training.sharding import make_mesh
  from utils.cli import load_config_file
  assert jax.device_count() == devices, (jax.device_count(), devices)
  config = load_config_file(spec(THROUGHPUT, quick))
  config.mesh.data = devices
  length, batch = (32, 8) if quick else (128, 32)
  run, _ = compiled_train_step(config, length, batch, vocab, mesh=make_mesh(config.mesh))
  return best_time(run, repeats=2 if quick else 5, min_time=0.05 if quick else 1.0)


def devices_section(args) -> list[str]:
  counts = (1, 8)
  seconds = {n: [] for n in counts}
  rounds = 1 if args.quick else args.rounds_devices
  for _ in range(rounds):
    for n in counts:  # alternated, so a busy spell of the machine hits both
      env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                        f" --xla_force_host_platform_device_count={n}").strip())
      cmd = [sys.executable, os.path.abspath(__file__), "--child_devices", str(n),
             "--vocab", str(args.vocab)] + (["--quick"] if args.quick else [])
      out = subprocess.run(cmd, env=env, capture_output=True, text=True)
      if out.returncode:
        raise SystemExit(f"the {n}-device subprocess failed:\n{out.stderr[-2000:]}")
      seconds[n].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
  med = {n: float(np.median(v)) for n, v in seconds.items()}
  length, batch = (32, 8) if args.quick else (128, 32)
  lines = [f"Throughput model ({spec(THROUGHPUT, args.quick)}), global batch {batch} x "
           f"{length}, vocabulary {args.vocab}, mesh.data = devices; best step time of each "
           f"subprocess, median of {rounds} alternated subprocesses each. "
           f"{os.cpu_count()} CPU cores shared by all devices.", "",
           "| host devices | ms / step | tokens/s | time ratio to 1 device |", "|---|---|---|---|"]
  for n in counts:
    lines.append(f"| {n} | {1e3 * med[n]:,.0f} | {batch * length / med[n]:,.0f} | "
                 f"{med[n] / med[1]:.2f} |")
  return lines


SECTIONS = {
    "eval": ("Evaluation throughput at long lengths (forward)", eval_section),
    "remat": ("model.remat: memory and time of the train step at 512", remat_section),
    "devices": ("The train step on 1 vs 8 host devices", devices_section),
    "gap": ("The train step's time beyond the bare-products stand-in, itemised",
            lambda args: step_gap.gap_section(args)),
}


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--section", choices=sorted(SECTIONS))
  p.add_argument("--quick", action="store_true", help="tiny shapes: checks the script runs")
  p.add_argument("--vocab", type=int, default=8000)
  p.add_argument("--remat_batch", type=int, default=8)
  p.add_argument("--rounds", type=int, default=3, help="remat: rounds of the two steps")
  p.add_argument("--rounds_devices", type=int, default=2,
                 help="devices: subprocesses of each device count")
  p.add_argument("--gap_lengths", default="128,64", help="gap: train lengths")
  p.add_argument("--gap_batch", type=int, default=32)
  p.add_argument("--gap_rounds", type=int, default=5, help="gap: rounds of every step in turn")
  p.add_argument("--gap_warmup", type=int, default=2, help="gap: untimed calls of each first")
  p.add_argument("--gap_clock", choices=("wall", "cpu"), default="wall",
                 help="gap: wall time, or the CPU time of the process (steadier on a machine "
                 "that other processes keep busy)")
  p.add_argument("--child_devices", type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument("--out", default="")
  args = p.parse_args()
  if args.quick:
    args.vocab = 500
  from utils.host_memory import keep_freed_host_memory
  keep_freed_host_memory()  # as the entry points do: measure what train.py runs
  if args.child_devices:  # the devices section's subprocess: one JSON line
    print(json.dumps({"seconds": device_step_seconds(args.child_devices, args.quick,
                                                     args.vocab)}))
    return 0
  if not args.section:
    p.error("--section is required: " + ", ".join(sorted(SECTIONS)))
  start = time.time()
  title, section = SECTIONS[args.section]
  lines = section(args)
  if args.quick:
    lines.insert(0, "QUICK: tiny shapes, not a measurement.\n")
  report(lines, start, args.out, title, "benchmarks/performance.py", sys.argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main())

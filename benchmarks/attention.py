"""Cost of one attention layer per kernel: forward+backward time and XLA temporary memory.

  python benchmarks/attention.py                      # all kernels, n = 512 ... 8192
  python benchmarks/attention.py --kernels softmax,linear --lengths 512,1024

One MultiHeadAttention layer (batch 1, 4 heads of d = 64, no position encoding so that only
the kernel differs), the gradient of a scalar of its output with respect to the parameters
and the input. Memory is the compiled executable's temp_size_in_bytes (XLA's own buffer
assignment: what the step needs besides its arguments and outputs), so it is exact for this
program and needs no run. Time is the best of a few runs after a warm-up, measured in one
process so that ratios to softmax at the same n are meaningful even where absolute times are
not (on a shared CPU they are indicative only).

A cell is not run (time '-') when its memory (temporaries, parameters and their gradients)
exceeds --max_temp_gb, or when the time predicted from the previous length (x4 per doubling,
the quadratic worst case) exceeds --max_seconds; its memory is still reported, since it comes
from compiling alone. Skips are listed under the table. Writes the tables, the command, the commit,
the machine and the wall time to --out (default docs/results/attention_cost.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import best_time, describe_machine  # noqa: E402
from model.attention import ATTENTIONS  # noqa: E402
from model.attention.layer import MultiHeadAttention  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.masks import padding_mask  # noqa: E402
from utils.host_memory import keep_freed_host_memory  # noqa: E402

LINEAR_FAMILY = ("linear", "performer", "nystrom")


def layer_step(attention: str, n: int, heads: int, head_dim: int):
  """(compiled fwd+bwd, make_args() -> its arguments, temp bytes, parameter bytes) at length n.

  Compiled from shapes only: nothing of size n is allocated until make_args() is called.
  """
  cfg = ModelConfig.from_dict(dict(
      vocab_size=8, width=heads * head_dim, num_heads=heads, attention=attention,
      position="none", scale="standard", dropout=0.0, max_len=max(n, 8)))
  layer = MultiHeadAttention(cfg)
  mask, positions = padding_mask(jnp.ones((1, n), bool)), jnp.arange(n)
  x = jax.ShapeDtypeStruct((1, n, cfg.width), jnp.float32)
  init = lambda key, x: layer.init(key, x, mask, positions)
  params = jax.eval_shape(init, jax.random.PRNGKey(1), x)

  def loss(params, x):
    return jnp.sum(layer.apply(params, x, mask, positions) ** 2)

  def make_args():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, n, cfg.width), jnp.float32)
    return jax.jit(init)(jax.random.PRNGKey(1), x), x

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
  param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(params))
  return compiled, make_args, compiled.memory_analysis().temp_size_in_bytes, param_bytes


def measure(kernels, lengths, heads, head_dim, max_temp_gb, max_seconds):
  """{(kernel, n): (seconds or None, temp bytes or None)} and a list of skip reasons."""
  cells, skipped = {}, []
  for kernel in kernels:
    last = None  # (n, seconds) of the previous measured length
    for n in lengths:
      try:
        compiled, make_args, temp, param_bytes = layer_step(kernel, n, heads, head_dim)
      except Exception as e:  # noqa: BLE001 (a cell that cannot compile is reported, not fatal)
        cells[kernel, n] = (None, None)
        skipped.append(f"{kernel} n={n}: did not compile ({type(e).__name__}: {e})")
        continue
      cells[kernel, n] = (None, temp)  # memory is known from compiling; time only if run
      need = temp + 2 * param_bytes  # temporaries + parameters and their gradients
      if need > max_temp_gb * 2 ** 30:
        skipped.append(f"{kernel} n={n}: not run, needs {need / 2**30:.1f} GiB (temporaries, "
                       f"parameters and their gradients) > {max_temp_gb:g} GiB")
        continue
      if last is not None and last[1] * (n / last[0]) ** 2 > max_seconds:
        skipped.append(f"{kernel} n={n}: not run, predicted > {max_seconds:g} s per step "
                       f"(measured {last[1]:.2f} s at n={last[0]}, x4 per doubling)")
        continue
      # best of 3 rounds of >= 0.3 s (one call per round for slow cells), after a warm-up
      seconds = best_time(compiled, *make_args(), repeats=3, min_time=0.3)
      cells[kernel, n] = (seconds, temp)
      last = (n, seconds)
      print(f"{kernel:>24} n={n:>5}: {seconds * 1e3:9.1f} ms  {temp / 2**20:9.1f} MiB", flush=True)
  return cells, skipped


def tables(cells, kernels, lengths) -> str:
  head = "| kernel | " + " | ".join(f"n={n}" for n in lengths) + " |\n"
  head += "|---|" + "---|" * len(lengths) + "\n"

  def cell(kernel, n, i, fmt):
    value, base = cells[kernel, n][i], cells.get(("softmax", n), (None, None))[i]
    if value is None:
      return "-"
    ratio = f" ({value / base:.2f}x)" if base and kernel != "softmax" else ""
    return fmt(value) + ratio

  time_rows = "".join(f"| {k} | " + " | ".join(
      cell(k, n, 0, lambda s: f"{s * 1e3:.1f}") for n in lengths) + " |\n" for k in kernels)
  mem_rows = "".join(f"| {k} | " + " | ".join(
      cell(k, n, 1, lambda b: f"{b / 2**20:.1f}") for n in lengths) + " |\n" for k in kernels)
  growth = ""
  for k in kernels:
    if k not in LINEAR_FAMILY:
      continue
    mem = [cells[k, n][1] for n in lengths]
    ratios = [f"{b / a:.2f}" if a and b else "-" for a, b in zip(mem, mem[1:])]
    growth += f"| {k} | " + " | ".join(ratios) + " |\n"
  pairs = [f"{a}->{b}" for a, b in zip(lengths, lengths[1:])]
  out = ("Forward+backward time per step, ms (ratio to softmax at the same n):\n\n" + head +
         time_rows + "\nXLA temporary memory, MiB (ratio to softmax at the same n):\n\n" + head +
         mem_rows)
  if growth:
    out += ("\nMemory growth per doubling of n (2.00 = linear, 4.00 = quadratic):\n\n"
            "| kernel | " + " | ".join(pairs) + " |\n|---|" + "---|" * len(pairs) + "\n" + growth)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--kernels", default=",".join(ATTENTIONS))
  p.add_argument("--lengths", default="512,1024,2048,4096,8192")
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--head_dim", type=int, default=64)
  p.add_argument("--max_temp_gb", type=float, default=4.0)
  p.add_argument("--max_seconds", type=float, default=15.0)
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "attention_cost.md"))
  args = p.parse_args(argv)
  keep_freed_host_memory()  # as the entry points do: measure what train.py runs
  kernels = [k for k in args.kernels.split(",") if k]
  unknown = sorted(set(kernels) - set(ATTENTIONS))
  if unknown:
    print(f"error: unknown kernels {unknown}; valid names: {sorted(ATTENTIONS)}", file=sys.stderr)
    return 2
  if "softmax" in kernels:  # the reference of every ratio: measured first
    kernels = ["softmax"] + [k for k in kernels if k != "softmax"]
  lengths = [int(n) for n in args.lengths.split(",")]

  start = time.time()
  cells, skipped = measure(kernels, lengths, args.heads, args.head_dim, args.max_temp_gb,
                           args.max_seconds)
  wall = time.time() - start
  body = tables(cells, kernels, lengths)
  print("\n" + body)
  command = "python benchmarks/attention.py" + "".join(
      f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
  notes = "".join(f"- {s}\n" for s in skipped) or "- none\n"
  doc = (
      "# Attention kernels: cost of one layer\n\n"
      f"One attention layer, batch 1, {args.heads} heads of d={args.head_dim}, float32, "
      "forward + backward (gradients of parameters and input), no position encoding.\n"
      "Memory: XLA temporaries of the compiled step (`memory_analysis().temp_size_in_bytes`).\n"
      "Time: best of several steps after a warm-up. All cells measured in one process; the "
      "machine was shared with other jobs, so times are indicative and the ratios are the "
      "robust part. Kernel settings are the defaults (performer_features=64, "
      "nystrom_landmarks=32, nystrom_iterations=6, synthesizer_rank=8; synthesizers get "
      "max_len = n).\n\n"
      f"Command: `{command}`  \nMachine and commit: {describe_machine()}  \n"
      f"Wall time: {wall:.0f} s\n\n" + body + "\nSkipped cells ('-'):\n\n" + notes +
      "\nThe kernels train end to end like softmax, e.g. "
      "`python train.py --config configs/mlm_extrapolation.py:attention=linear "
      "--workdir runs/linear`.\n")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    f.write(doc)
  print(f"wrote {os.path.relpath(args.out, ROOT)} ({wall:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())

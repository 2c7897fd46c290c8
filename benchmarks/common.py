"""Shared measuring helpers for the benchmark scripts (not tests): one process, ratios."""
from __future__ import annotations

import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

# the models of the performance pages and the GPU script: the length study's (its config's
# defaults) and the throughput model (4 layers, width 256)
STUDY = "configs/mlm_extrapolation.py"
THROUGHPUT = "configs/mlm_extrapolation.py:width=256,layers=4,heads=4,mlp=1024"


def best_time(fn, *args, repeats: int = 5, min_time: float = 0.5):
  """Best wall time of fn(*args) over `repeats` timed rounds (after one warm-up call)."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    n, start = 0, time.perf_counter()
    while True:
      jax.block_until_ready(fn(*args))
      n += 1
      if time.perf_counter() - start >= min_time:
        break
    best = min(best, (time.perf_counter() - start) / n)
  return best


def interleaved_times(runs: dict, rounds: int, calls: int, warmup: int = 2,
                      clock=time.perf_counter) -> dict:
  """{name: [seconds per call, one per round]} of no-argument callables timed in turn: each
  round times `calls` calls of each (the order rotated from round to round), so that a busy
  spell of the machine hits all of them alike. `warmup` calls of each first (compilation,
  optimizer-state allocation) are not timed. clock=time.process_time: the CPU seconds of
  this process (all its threads) instead of the wall time, the steadier measure of the work
  on a machine that other processes keep busy."""
  for run in runs.values():
    for _ in range(warmup):
      jax.block_until_ready(run())
  names, times = list(runs), {name: [] for name in runs}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      start = clock()
      for _ in range(calls):
        jax.block_until_ready(runs[name]())
      times[name].append((clock() - start) / calls)
  return times


def page_faults_per_call(fn, calls: int = 7) -> float:
  """Minor page faults of the median call once warm: memory the kernel maps and zeroes afresh
  every step. (The median, because the heap may grow once by a whole scratch block, most
  likely when a step allocates its block before the previous step's is freed: a one-off, not
  a per-step cost.)
  """
  import resource  # Unix only; the other helpers work anywhere
  faults = []
  for _ in range(calls):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(fn())
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  return float(np.median(faults))


def matmul_peak_flops(n: int = 2048, dtype=jnp.float32) -> float:
  """Achieved FLOP/s of one n x n x n matmul in this process: the 'machine peak' we compare to."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  return 2 * n ** 3 / best_time(f, a, b)


def compiled_cost(compiled) -> dict:
  """XLA's cost analysis of a compiled executable: 'flops', 'bytes accessed', ... of one call."""
  cost = compiled.cost_analysis()
  return dict(cost[0] if isinstance(cost, (list, tuple)) else cost)


def compiled_flops(compiled) -> float:
  """FLOPs of one call according to XLA's cost analysis of a compiled executable."""
  return float(compiled_cost(compiled).get("flops", 0.0))


def describe_machine() -> str:
  dev = jax.devices()[0]
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  import os
  return (f"{dev.platform} ({dev.device_kind}), {os.cpu_count()} CPU cores, "
          f"{platform.machine()}, jax {jax.__version__}, commit {commit}")


def report(lines, began: float, out: str, title: str, script: str, argv) -> None:
  """Prints the measured lines with the machine and the wall time since `began`; with `out`,
  writes them as a results page: `# title`, the command that made it, the text, then the
  page's written analysis, from '## Reading' on, kept from the file being replaced."""
  import os
  lines = [*lines, "", f"Machine: {describe_machine()}. Wall time {time.time() - began:.0f} s."]
  text = "\n".join(lines)
  print(text)
  if not out:
    return
  from utils.files import atomic_write_text
  reading = ""
  if os.path.exists(out):
    with open(out, encoding="utf-8") as f:
      old = f.read()
    reading = old[old.index("\n## Reading"):] if "\n## Reading" in old else ""
  command = " ".join(["python", script, *argv])
  atomic_write_text(out, f"# {title}\n\nCommand: `{command}`\n\n{text}\n{reading}")

"""Memory and time of exact contrastive accumulation against true batches, in one process.

  python benchmarks/contrastive.py [--config configs/contrastive_batch.py[:variants]]
      [--batch 512] [--micro 32] [--vocab 8000] [--out docs/results/contrastive_benchmark.md]

Three real jitted train steps (per-example dropout, forward, backward, AdamW update) of the
config's sentence encoder: a true batch of --micro examples, exact accumulation over --batch
examples in micro-batches of --micro, and a true batch of --batch (plus naive accumulation for
reference). Memory is XLA's temporary allocation of the compiled step (memory_analysis), time
the best wall time per step. Targets: exact memory <= 1.3 x the --micro step's, exact time
<= 1.5 x the --batch step's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import best_time, describe_machine  # noqa: E402
from utils.host_memory import keep_freed_host_memory  # noqa: E402


def compiled_step(config, vocab: int, batch: int, micro: int, mode: str):
  """(jitted train step, state, batch arrays, key) of the config's task at this batch/mode."""
  from model.config import ModelConfig
  from objectives.accumulation import make_grad_fn
  from objectives.contrastive import LossConfig, contrastive_loss
  from training import contrastive
  from training.optimizer import make_optimizer
  from training.state import TrainState
  from training.step import make_train_step

  model_cfg = ModelConfig.from_dict(dict(config.model.to_dict(), vocab_size=vocab))
  model = contrastive.sentence_model(config, model_cfg)
  n = config.data.max_len
  tx = make_optimizer(config.train)
  params = jax.jit(lambda k: contrastive.init_params(model, k, n))(jax.random.PRNGKey(0))
  state = TrainState.create(params, tx)
  loss_cfg = LossConfig.from_config(config.loss)
  grad_fn = make_grad_fn(mode, contrastive.make_embed(model, config.data.signal),
                         lambda h: contrastive_loss(h, loss_cfg), micro)
  step = make_train_step(None, tx, grad_fn=grad_fn)
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, vocab, (batch, 2, n)).astype(np.int32)
  lengths = rng.integers(n // 3, n + 1, (batch, 2))  # realistic padding
  tokens[np.arange(n)[None, None] >= lengths[..., None]] = 0
  return step, state, {"tokens": tokens}, jax.random.PRNGKey(1)


def measure(config, vocab: int, batch: int, micro: int, mode: str) -> dict:
  step, state, arrays, key = compiled_step(config, vocab, batch, micro, mode)
  start = time.perf_counter()
  compiled = step.lower(state, arrays, key).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  holder = {"state": state}

  def run():  # the state is donated: thread it through
    holder["state"], m = compiled(holder["state"], arrays, key)
    return m["loss"]

  seconds = best_time(run, repeats=3, min_time=1.0)
  return {"batch": batch, "micro": micro if mode != "none" else batch, "mode": mode,
          "temp_mib": mem.temp_size_in_bytes / 2 ** 20,
          "args_mib": mem.argument_size_in_bytes / 2 ** 20, "step_s": seconds,
          "examples_per_s": batch / seconds, "compile_s": compile_s}


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/contrastive_batch.py")
  p.add_argument("--batch", type=int, default=512)
  p.add_argument("--micro", type=int, default=32)
  p.add_argument("--vocab", type=int, default=8000, help="vocabulary size (the English "
                 "WordPiece MLM of the study has 8000)")
  p.add_argument("--out", default="")
  args = p.parse_args()
  keep_freed_host_memory()  # as the entry points do: measure what train.py runs
  from utils.cli import load_config_file
  config = load_config_file(args.config)
  b, m = args.batch, args.micro
  rows = [measure(config, args.vocab, m, m, "none"),
          measure(config, args.vocab, b, m, "exact"),
          measure(config, args.vocab, b, b, "none"),
          measure(config, args.vocab, b, m, "naive")]
  small, exact, large = rows[0], rows[1], rows[2]
  mem_ratio = exact["temp_mib"] / small["temp_mib"]
  time_ratio = exact["step_s"] / large["step_s"]
  mc = config.model
  lines = [
      f"Contrastive train step, sentence encoder width {mc.width}, {mc.num_layers} layers, "
      f"{config.data.max_len} tokens per sentence, 2 views per example, vocabulary "
      f"{args.vocab}, loss {config.loss.name}.",
      f"Machine: {describe_machine()}.", "",
      "| step | batch | micro-batch | XLA temp memory (MiB) | step time (s) | examples/s |",
      "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['mode'] if r['mode'] != 'none' else 'true batch'} | {r['batch']} | "
                 f"{r['micro']} | {r['temp_mib']:.1f} | {r['step_s']:.3f} | "
                 f"{r['examples_per_s']:.0f} |")
  lines += ["",
            f"- memory: exact (batch {b}, micro {m}) / true batch {m} = **{mem_ratio:.2f}** "
            f"(target <= 1.3); true batch {b} / true batch {m} = "
            f"{large['temp_mib'] / small['temp_mib']:.2f}",
            f"- time: exact (batch {b}, micro {m}) / true batch {b} = **{time_ratio:.2f}** "
            "(target <= 1.5; one extra forward pass makes 4/3 the ideal)"]
  text = "\n".join(lines)
  print(text)
  if args.out:
    from utils.files import atomic_write_text
    atomic_write_text(args.out, text + "\n")
  return 0 if mem_ratio <= 1.3 and time_ratio <= 1.5 else 1


if __name__ == "__main__":
  sys.exit(main())

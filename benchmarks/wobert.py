"""WoBERT's word-level tokenizer against characters on the MLM config's corpus (the shipped
novel): tokens per character at several vocabulary sizes, and MLM training throughput in
characters of text per second, in one process.

  python benchmarks/wobert.py [--sizes 6000,10000,16000,0] [--train_sizes 10000,0]
      [--steps 40] [--rounds 4] [--config configs/mlm_extrapolation.py]
      [--out docs/results/wobert.md]

Sizes are data.vocab_size values for tokenizer=wobert (every token: specials, the training
split's characters, then jieba's most frequent words; 0 = the 20,000-word default). Tokens per
character are counted on the held-out split (the tokenizers are built on the training split,
as train.py builds them). Throughput: the real jitted train step (masking, dropout, forward,
backward, AdamW) on the config's batches of the packed training split, `--steps` steps per
tokenizer in `--rounds` interleaved rounds (char, wobert, wobert, char, ... so that a busy
machine slows each alike); characters/s = tokens/s x the training stream's characters per
token. Accuracy is not compared: that needs training to convergence.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import report  # noqa: E402


def tokenizers(train_docs, sizes, min_count: int):
  """{label: tokenizer}: char, and wobert at each size, from one built vocabulary (the
  vocabulary of a smaller size is a prefix of a larger one's: characters, then words by
  count)."""
  from data.tokenizers import CharTokenizer, WobertTokenizer
  from utils.errors import UserError
  out = {"char": CharTokenizer.train(train_docs, min_count=min_count)}
  base = out["char"].vocab_size  # the specials and characters every wobert vocabulary holds
  small = [s for s in sizes if 0 < s < base]
  if small:
    raise UserError(f"--sizes {min(small)} is smaller than tokenizer=wobert's {base} special "
                    f"tokens and characters; use sizes of at least {base} (or 0)")
  full = WobertTokenizer.train(train_docs, min_count=min_count,
                               size=0 if 0 in sizes else max(sizes))
  for size in sorted(sizes, key=lambda s: s or len(full.vocab)):
    vocab = full.vocab[:size] if size else full.vocab
    out[f"wobert {size or 'default'}"] = WobertTokenizer(vocab)
  return out


def step_runner(config, vocab_size: int, stream: np.ndarray):
  """run(n) -> seconds for n train steps on consecutive real batches (compiled first)."""
  from data.mlm import TrainBatches
  from model.encoder import MlmModel
  from training import mlm
  from training.optimizer import make_optimizer
  from training.state import TrainState
  from training.step import make_train_step

  model = MlmModel(mlm.model_config(config, vocab_size))
  tx = make_optimizer(config.train)
  length = config.data.train_length
  batches = TrainBatches(stream, length, config.train.batch_size, config.seed)
  holder = {"state": TrainState.create(mlm.init_params(model, jax.random.PRNGKey(0), length), tx),
            "step": 0}
  step = make_train_step(mlm.mlm_loss_fn(model, config.data.mask_rate), tx)
  step = step.lower(holder["state"], batches.batch(0), jax.random.PRNGKey(0)).compile()

  def run(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):  # the state is donated: thread it through
      i = holder["step"]
      holder["state"], metrics = step(holder["state"], batches.batch(i),
                                      jax.random.fold_in(jax.random.PRNGKey(1), i))
      holder["step"] += 1
    jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - start

  run(1)  # warm
  return run


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/mlm_extrapolation.py")
  p.add_argument("--sizes", default="6000,10000,16000,0")
  p.add_argument("--train_sizes", default="10000,0", help="the wobert sizes whose training "
                 "throughput is measured (beside char)")
  p.add_argument("--steps", type=int, default=40)  # a busy 2-core machine: ~2 minutes
  p.add_argument("--rounds", type=int, default=4)
  p.add_argument("--out", default="")
  args = p.parse_args()
  began = time.time()
  from data.corpus import load_documents, split_documents
  from data.mlm import pack
  from data.tokenizers import UNK
  from utils.cli import load_config_file
  from utils.errors import UserError

  try:
    config = load_config_file(args.config)
    sizes = [int(s) for s in args.sizes.split(",")]
    train_sizes = [int(s) for s in args.train_sizes.split(",")]
    if not set(train_sizes) <= set(sizes):
      raise UserError(f"--train_sizes {args.train_sizes} must be among --sizes {args.sizes}")
    d = config.data
    docs = load_documents(d)
    train_docs, valid_docs = split_documents(docs, d.valid_fraction,
                                             d.get("split_seed", config.seed))
    toks = tokenizers(train_docs, sizes, d.min_count)
  except UserError as e:  # a bad option or corpus: one line
    print(f"error: {e}", file=sys.stderr)
    return 2
  valid_chars = sum(len(x) for x in valid_docs)
  rows = []
  for label, tok in toks.items():
    ids = [i for x in valid_docs for i in tok.encode(x)]
    rows.append((label, tok.vocab_size, len(ids) / valid_chars,
                 sum(i == UNK for i in ids) / len(ids)))
  lines = [f"Corpus {d.corpus}: {len(train_docs)} training documents, {len(valid_docs)} "
           f"held out ({valid_chars} characters, where tokens per character are counted).", "",
           "| tokenizer | vocabulary | tokens / character | [UNK] share of tokens |",
           "|---|---|---|---|"]
  lines += [f"| {label} | {v} | {r:.3f} | {100 * u:.2f}% |" for label, v, r, u in rows]

  measured = ["char"] + [f"wobert {s or 'default'}" for s in train_sizes]
  runners, per_token = {}, {}
  train_chars = sum(len(x) for x in train_docs)
  for label in measured:
    stream = pack([toks[label].encode(x) for x in train_docs])
    per_token[label] = train_chars / len(stream)  # [SEP] counted as a token, as trained
    runners[label] = step_runner(config, toks[label].vocab_size, stream)
  seconds = {label: [] for label in measured}
  per_round = args.steps // args.rounds
  for r in range(args.rounds):
    order = measured if r % 2 == 0 else measured[::-1]
    for label in order:
      seconds[label].append(per_round / runners[label](per_round))  # steps/s of this round
  tokens_per_step = config.train.batch_size * d.train_length
  m = config.model
  lines += ["", f"Training: {m.num_layers} layers, width {m.width}, {m.num_heads} heads, MLP "
            f"{m.mlp_dim}, position={m.position}, scale={m.scale}; batch "
            f"{config.train.batch_size} x {d.train_length} tokens; {per_round * args.rounds} "
            f"steps each in {args.rounds} interleaved rounds (median and range of the rounds).",
            "", "| tokenizer | vocabulary | characters / token (training stream) | steps/s | "
            "tokens/s | characters/s | characters/s vs char |", "|---|---|---|---|---|---|---|"]
  base = None
  for label in measured:
    rate = float(np.median(seconds[label]))
    chars = rate * tokens_per_step * per_token[label]
    base = base or chars
    lines.append(f"| {label} | {toks[label].vocab_size} | {per_token[label]:.3f} | {rate:.2f} "
                 f"({min(seconds[label]):.2f}-{max(seconds[label]):.2f}) | "
                 f"{rate * tokens_per_step:.0f} | {chars:.0f} | {chars / base:.2f}x |")
  report(lines, began, args.out, "WoBERT's word-level tokenizer vs characters",
         "benchmarks/wobert.py", sys.argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""The contrastive batch study: run a config's sweep in one process, then tables and plots.

  python -m evaluation.contrastive_study --config "configs/contrastive_batch.py:BASE" \
      --root runs/cb_en [--batches 8,16,...] [--losses ...] [--modes ...] [--seeds 0,1] [--run]
  python -m evaluation.contrastive_study --root runs/cb_en --table [--plot docs/results/x.png]

--run trains every selected point of sweep() that is not finished yet (one process: imports,
data and compiled programs are shared, which on a CPU saves more time than the runs take at
small batches). A point whose batch is not larger than train.micro_batch is the same
computation in every accumulation mode, so only mode `none` is run there and the table shows
it in every mode's row. --table reads each workdir's config.json and sts_eval.json and prints
Spearman x100, mean ± std over seeds, per loss and mode (rows) and batch (columns).
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.files import read_json  # noqa: E402

PUBLISHED_SIMCSE = {32: 84.6, 64: 85.6, 128: 86.0, 256: 86.2, 512: 86.2, 1024: 86.0}


def _variant_fields(variant: str) -> dict:
  return dict(part.split("=", 1) for part in variant.split(",") if "=" in part)


def select(variants, micro: int, batches=None, losses=None, modes=None, seeds=None):
  """The sweep entries to run: filtered, and at batch <= micro only mode none."""
  out = []
  for v in variants:
    f = _variant_fields(v)
    b = int(f["batch"])
    if ((batches and b not in batches) or (losses and f["loss"] not in losses) or
        (modes and f["accumulation"] not in modes) or (seeds and int(f["seed"]) not in seeds)):
      continue
    if b <= micro and f["accumulation"] != "none":
      continue
    out.append(v)
  return out


def run_name(variant: str) -> str:
  f = _variant_fields(variant)
  return f"{f['loss']}_{f['accumulation']}_b{int(f['batch']):04d}_s{f['seed']}"


def finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, "sts_eval.json"))


def run(config_spec: str, root: str, variants) -> None:
  from configs.variants import parse
  from utils.cli import load_config_file
  from training import contrastive
  base = config_spec.partition(":")[2]
  path = config_spec.partition(":")[0]
  for i, v in enumerate(variants):
    workdir = os.path.join(root, run_name(v))
    if finished(workdir):
      print(f"[{i + 1}/{len(variants)}] {workdir}: finished, skipped", file=sys.stderr)
      continue
    spec = ",".join(x for x in (base, v) if x)
    parse(spec)
    print(f"[{i + 1}/{len(variants)}] {workdir} <- {spec}", file=sys.stderr, flush=True)
    result, evals = contrastive.train(load_config_file(f"{path}:{spec}"), workdir,
                                      progress=False)
    if result.interrupted:  # SIGTERM: the checkpoint is saved; the same command resumes
      return
    print(f"  Spearman x100 {100 * evals['spearman']:.2f}", file=sys.stderr, flush=True)


def collect(root: str) -> list[dict]:
  """One row per finished workdir under root: loss, mode, batch, micro, seed, spearman."""
  rows = []
  for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    if not (os.path.isdir(d) and finished(d)):
      continue
    c = read_json(os.path.join(d, "config.json"))
    result = next(iter(read_json(os.path.join(d, "sts_eval.json")).values()))
    rows.append(dict(loss=c["loss"]["name"], mode=c["train"]["accumulation"],
                     batch=c["train"]["batch_size"], micro=c["train"]["micro_batch"],
                     seed=c["seed"], spearman=100 * result["spearman"], workdir=d))
  return rows


def aggregate(rows) -> dict:
  """{(loss, mode, batch): [spearman per seed]}; a batch <= micro counts for every mode."""
  cells = collections.defaultdict(list)
  for r in rows:
    same = ("none", "exact", "naive") if r["batch"] <= r["micro"] else (r["mode"],)
    for mode in same:
      cells[(r["loss"], mode, r["batch"])].append(r["spearman"])
  return cells


def mean_std(values):
  m = sum(values) / len(values)
  s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
  return m, s


def table(cells) -> str:
  batches = sorted({k[2] for k in cells})
  keys = sorted({k[:2] for k in cells}, key=lambda k: (k[0], ("none", "exact", "naive").index(k[1])))
  lines = ["| loss | accumulation | " + " | ".join(str(b) for b in batches) + " |",
           "|---|---|" + "---|" * len(batches)]
  for loss, mode in keys:
    cells_text = []
    for b in batches:
      v = cells.get((loss, mode, b))
      if not v:
        cells_text.append("-")
        continue
      m, s = mean_std(v)
      cells_text.append(f"{m:.1f} ± {s:.1f}" + (f" (n={len(v)})" if len(v) != 2 else ""))
    lines.append(f"| {loss} | {mode} | " + " | ".join(cells_text) + " |")
  return "\n".join(lines)


def mode_agreement(rows, a: str = "none", b: str = "exact") -> str:
  """Largest |Spearman(a) - Spearman(b)| over runs with the same loss, batch and seed (where
  the batch exceeds the micro-batch, so that the two modes really are different programs)."""
  by = {(r["loss"], r["mode"], r["batch"], r["seed"]): r["spearman"] for r in rows}
  diffs = [(abs(v - by[(l, b, n, s)]), l, n, s) for (l, m, n, s), v in by.items()
           if m == a and (l, b, n, s) in by and n > next(r["micro"] for r in rows)]
  if not diffs:
    return f"no runs with both accumulation={a} and accumulation={b}"
  worst = max(diffs)
  return (f"accumulation={a} vs {b}: {len(diffs)} paired runs (same loss, batch, seed), largest "
          f"|difference| {worst[0]:.3f} Spearman points ({worst[1]}, batch {worst[2]}, seed "
          f"{worst[3]})")


def plot(cells, path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  losses = sorted({k[0] for k in cells})
  fig, axes = plt.subplots(1, len(losses), figsize=(5.5 * len(losses), 4), sharey=True,
                           squeeze=False)
  style = {"none": ("C0", "o", "-"), "exact": ("C1", "s", "--"), "naive": ("C2", "^", ":")}
  for ax, loss in zip(axes[0], losses):
    for mode, (color, marker, line) in style.items():
      pts = sorted((b, mean_std(v)) for (l, m, b), v in cells.items() if l == loss and m == mode)
      if not pts:
        continue
      xs = [b for b, _ in pts]
      ax.errorbar(xs, [ms[0] for _, ms in pts], yerr=[ms[1] for _, ms in pts], color=color,
                  marker=marker, linestyle=line, capsize=3, label=f"accumulation={mode}")
    ax.set_xscale("log", base=2)
    ticks = sorted({k[2] for k in cells})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("batch size (examples)")
    ax.set_title(f"{title}: {loss}")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("STS Spearman x100 (mean ± std over seeds)")
  axes[0][-1].legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _ints(text):
  return [int(x) for x in text.split(",")] if text else None


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="configs/contrastive_batch.py")
  p.add_argument("--root", required=True)
  p.add_argument("--run", action="store_true")
  p.add_argument("--batches", default="")
  p.add_argument("--losses", default="")
  p.add_argument("--modes", default="")
  p.add_argument("--seeds", default="")
  p.add_argument("--table", action="store_true")
  p.add_argument("--plot", default="")
  p.add_argument("--title", default="STS-B dev")
  args = p.parse_args()
  from utils.errors import UserError
  try:
    if args.run:
      from configs.contrastive_batch import sweep
      from utils.cli import load_config_file
      micro = load_config_file(args.config).train.micro_batch
      chosen = select(sweep(), micro, _ints(args.batches),
                      args.losses.split(",") if args.losses else None,
                      args.modes.split(",") if args.modes else None, _ints(args.seeds))
      run(args.config, args.root, chosen)
    if args.table or args.plot:
      rows = collect(args.root)
      cells = aggregate(rows)
      if args.table:
        print(table(cells))
        print()
        print(mode_agreement(rows))
      if args.plot:
        plot(cells, args.plot, args.title)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""The inference-time extrapolation table of docs/results/mlm_extrapolation.md, from the
committed evaluation files alone (docs/results/mlm_runs/<corpus>/<run>/eval*.json).

  python docs/results/mlm_inference_table.py docs/results/mlm_runs/zh

Rows: each trained model (scale standard / logn) x each method evaluated on it with
`evaluate.py --model_override` (the file name says which); cells: MLM accuracy (%) mean ± std
over the seeds that have the file, then the paired difference from the same model without a
method, mean [95% Student-t interval] over seeds.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from evaluation.tables import mean_std, paired_difference  # noqa: E402


def method_name(file_name: str) -> str:
  """eval_rope_scaling-ntk_rope_scaling_factor-16.json -> 'rope_scaling=ntk, rope_scaling_factor=16'"""
  tag = file_name.removeprefix("eval").removesuffix(".json").lstrip("_")
  if not tag:
    return "none"
  parts = re.split(r"_(?=rope_scaling|scale-|logn_n0-|rerope_window-)", tag)
  return ", ".join(p.replace("-", "=", 1) for p in parts)


def collect(root: str) -> dict:
  """{(model scale, method): {length: {seed: accuracy %}}}"""
  cells = {}
  for run in sorted(glob.glob(os.path.join(root, "scale-*_seed-*"))):
    scale, seed = re.fullmatch(r"scale-(\w+)_seed-(\d+)", os.path.basename(run)).groups()
    for path in sorted(glob.glob(os.path.join(run, "eval*.json"))):
      with open(path) as f:
        lengths = json.load(f)["lengths"]
      row = cells.setdefault((scale, method_name(os.path.basename(path))), {})
      for n, v in lengths.items():
        row.setdefault(int(n), {})[int(seed)] = 100 * v["accuracy"]
  return cells


def table(cells: dict) -> str:
  lengths = sorted({n for row in cells.values() for n in row})
  head = "| model | method | " + " | ".join(map(str, lengths)) + " |"
  lines = [head, "|" + "---|" * (len(lengths) + 2)]
  for (scale, method), row in sorted(cells.items(), key=lambda kv: (kv[0][0] != "standard",
                                                                    kv[0][1] != "none",
                                                                    kv[0][1])):
    base = cells.get((scale, "none"), {})
    texts = []
    for n in lengths:
      values = row.get(n, {})
      if not values:
        texts.append("-")
        continue
      m, s = mean_std(list(values.values()))
      text = f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"
      d = paired_difference(base.get(n, {}), values) if method != "none" else None
      if d is not None and d["n"] > 1:
        text += f" ({d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}])"
      texts.append(text)
    n_seeds = len({s for v in row.values() for s in v})
    lines.append(f"| {scale} (n={n_seeds}) | {method} | " + " | ".join(texts) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(table(collect(sys.argv[1])))

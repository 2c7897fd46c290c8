"""The inference-time extrapolation table of docs/results/mlm_extrapolation.md, from the
committed evaluation files alone (docs/results/mlm_runs/<corpus>/<run>/eval*.json).

  python docs/results/mlm_inference_table.py docs/results/mlm_runs/zh

One table per trained model (scale standard / logn), a row per method evaluated on it with
`evaluate.py --model_override` (the file name says which): MLM accuracy (%) mean ± std over
seeds, then each method's difference from the same model without a method, paired by seed,
mean [95% Student-t interval] (evaluation.tables.seed_length_table, as evaluate.py prints).
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from evaluation.tables import seed_length_table  # noqa: E402


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
  """One seed table per trained model (evaluation.tables.seed_length_table, as evaluate.py
  --table prints), each method's difference from that model without a method."""
  out = []
  for scale in sorted({k[0] for k in cells}, key=lambda m: m != "standard"):
    rows = sorted(((method, row) for (m, method), row in cells.items() if m == scale),
                  key=lambda r: (r[0] != "none", r[0]))
    text, notes = seed_length_table(rows, baseline="none")
    out.append(f"Model trained with scale={scale}:\n\n" + text +
               ("\n\n" + "\n".join(notes) if notes else ""))
  return "\n\n".join(out)


if __name__ == "__main__":
  print(table(collect(sys.argv[1])))

"""evaluate.py's library side: score workdirs (or reuse their eval.json) and tabulate."""
from __future__ import annotations

import json
import os

from evaluation.mlm_by_length import evaluate_workdir
from evaluation.tables import length_table
from training import workdir as wd
from training.checkpoint import latest_step
from utils.errors import UserError
from utils.files import read_json


def cached_or_evaluate(workdir: str, lengths=None) -> dict:
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  config = wd.load_config(workdir)
  latest = latest_step(workdir)
  path = os.path.join(workdir, "eval.json")
  wanted = [int(n) for n in (lengths or config.eval.lengths)]
  if os.path.exists(path):
    res = read_json(path)
    have = {int(n) for n in res["lengths"]} | set(res.get("refused", []))
    if res.get("step") == latest and set(wanted) <= have:
      res["lengths"] = {n: v for n, v in res["lengths"].items() if int(n) in wanted}
      return res
  return evaluate_workdir(workdir, lengths=wanted, config=config)


def run_name(workdir: str) -> str:
  """position/scale label from the run's config, e.g. 'rope, logn'."""
  try:
    m = wd.load_config(workdir).model
    return f"{os.path.basename(os.path.normpath(workdir))} ({m.position}, {m.scale})"
  except (UserError, KeyError, AttributeError):
    return workdir


def evaluate_runs(workdirs, lengths=None, table: bool = True, metric: str = "accuracy") -> str:
  rows = [(run_name(d), cached_or_evaluate(d, lengths)["lengths"]) for d in workdirs]
  if not table:
    return json.dumps(rows[0][1], indent=2)
  title = "MLM accuracy (%)" if metric == "accuracy" else "MLM loss"
  return f"{title} by evaluation length:\n" + length_table(rows, metric=metric,
                                                            percent=metric == "accuracy")

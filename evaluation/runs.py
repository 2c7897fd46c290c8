"""evaluate.py's library side: score workdirs (or reuse their eval.json) and tabulate."""
from __future__ import annotations

import json
import math
import os

from evaluation.mlm_by_length import evaluate_workdir
from evaluation.tables import length_table
from training import workdir as wd
from training.checkpoint import latest_step
from utils.errors import UserError
from utils.files import read_json


# Model fields that change how a trained model computes, not its parameters: these can be
# changed at evaluation time (e.g. NTK-scaled RoPE, or the log-n scale, on a model trained
# without them).
EVAL_OVERRIDABLE = ("scale", "logn_n0", "logn_floor", "rope_scaling", "rope_scaling_factor",
                    "rerope_window", "rope_base", "window")


def apply_overrides(config, overrides: list[str]):
  """['rope_scaling=ntk', ...] -> a copy of config with those model fields replaced."""
  from configs.variants import _typed, model_defaults
  config = config.copy_and_resolve_references()
  defaults = model_defaults()
  for item in overrides:
    key, sep, value = item.partition("=")
    key = key.strip().removeprefix("model.")
    if not sep or key not in EVAL_OVERRIDABLE:
      raise UserError(f"--model_override {item!r}: expected KEY=VALUE with KEY one of "
                      f"{list(EVAL_OVERRIDABLE)} (fields that do not change the parameters)")
    old = config.model[key] if key in config.model else defaults[key]  # older workdirs
    with config.unlocked():
      config.model[key] = _typed(old, value.strip(), key)
  return config


def override_tag(overrides) -> str:
  return "_".join(o.replace("model.", "").replace("=", "-") for o in overrides)


def cached_or_evaluate(workdir: str, lengths=None, overrides=()) -> dict:
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  config = apply_overrides(wd.load_config(workdir), overrides)
  latest = latest_step(workdir)
  tag = override_tag(overrides)
  path = os.path.join(workdir, f"eval_{tag}.json" if tag else "eval.json")
  wanted = [int(n) for n in (lengths or config.eval.lengths)]
  if os.path.exists(path):
    res = read_json(path)
    have = {int(n) for n in res["lengths"]} | set(res.get("refused", []))
    if res.get("step") == latest and set(wanted) <= have:
      res["lengths"] = {n: v for n, v in res["lengths"].items() if int(n) in wanted}
      return res
  return evaluate_workdir(workdir, lengths=wanted, config=config, out=path)


def run_name(workdir: str) -> str:
  """position/scale label from the run's config, e.g. 'rope, logn'."""
  try:
    m = wd.load_config(workdir).model
    return f"{os.path.basename(os.path.normpath(workdir))} ({m.position}, {m.scale})"
  except (UserError, KeyError, AttributeError):
    return workdir


def entropy_runs(workdirs, lengths=None, overrides=()) -> str:
  """Mean attention entropy by length, one row per run, and log n (uniform attention)."""
  from evaluation.entropy import entropy_workdir
  tag = override_tag(overrides)
  suffix = f" [{', '.join(overrides)}]" if overrides else ""
  rows = []
  for d in workdirs:
    config = apply_overrides(wd.load_config(d), overrides)
    out = os.path.join(d, f"entropy_{tag}.json" if tag else "entropy.json")
    rows.append((run_name(d) + suffix, entropy_workdir(d, lengths, config, out)["lengths"]))
  lengths = sorted({int(n) for _, r in rows for n in r})
  rows.append(("log n (uniform attention)",
               {n: {"entropy": math.log(n)} for n in lengths}))
  return ("Mean attention entropy (nats) by evaluation length:\n" +
          length_table(rows, metric="entropy", percent=False, digits=3))


def evaluate_runs(workdirs, lengths=None, table: bool = True, metric: str = "accuracy",
                  overrides=()) -> str:
  suffix = f" [{', '.join(overrides)}]" if overrides else ""
  rows = [(run_name(d) + suffix, cached_or_evaluate(d, lengths, overrides)["lengths"])
          for d in workdirs]
  if not table:
    return json.dumps(rows[0][1], indent=2)
  title = "MLM accuracy (%)" if metric == "accuracy" else "MLM loss"
  return f"{title} by evaluation length:\n" + length_table(rows, metric=metric,
                                                            percent=metric == "accuracy")

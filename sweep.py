"""Run a config's sweep() sequentially, resumably, or print one command per variant.

  python sweep.py --config configs/mlm_extrapolation.py --root runs/extrapolation
  python sweep.py --config configs/mlm_extrapolation.py --root runs/extrapolation --print

Each variant trains in ROOT/<variant name>; a finished run (eval.json present) is skipped, an
unfinished one resumes. At the end the runs are tabulated with evaluate.py's table.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from absl import flags

from utils.cli import run_main
from utils.errors import UserError

_CONFIG = flags.DEFINE_string("config", None, "Config file (its sweep() lists the variants).")
_ROOT = flags.DEFINE_string("root", None, "Parent directory of the runs' workdirs.")
_BASE = flags.DEFINE_string("variant", "", "Variant string prepended to every sweep entry, "
                            "e.g. 'corpus=my.txt,steps=3000'.")
_PRINT = flags.DEFINE_bool("print", False, "Print the commands instead of running them.")
flags.mark_flags_as_required(["config", "root"])
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def load_sweep(path: str) -> list[str]:
  import importlib.util
  if not os.path.exists(path):
    raise UserError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise UserError(f"{path} defines no sweep(); add one that returns a list of variant strings")
  return list(module.sweep())


def run_name(variant: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.+-]+", "_", variant.replace("=", "-").replace(",", "_")) or "base"


def main(argv) -> int:
  del argv
  runs = []
  for variant in load_sweep(_CONFIG.value):
    full = ",".join(v for v in (_BASE.value, variant) if v)
    workdir = os.path.join(_ROOT.value, run_name(variant))
    cmd = [sys.executable, TRAIN, f"--config={_CONFIG.value}:{full}", f"--workdir={workdir}"]
    runs.append((workdir, cmd))
  if _PRINT.value:
    for _, cmd in runs:
      print(" ".join(shlex.quote(c) for c in ["python", "train.py"] + cmd[2:]))
    return 0
  for i, (workdir, cmd) in enumerate(runs):
    if os.path.exists(os.path.join(workdir, "eval.json")):
      print(f"[{i + 1}/{len(runs)}] {workdir}: finished, skipped", file=sys.stderr)
      continue
    print(f"[{i + 1}/{len(runs)}] {' '.join(cmd[1:])}", file=sys.stderr)
    rc = subprocess.call(cmd)
    if rc:
      print(f"error: {workdir} failed (exit {rc}); fix it and rerun: finished runs are skipped",
            file=sys.stderr)
      return rc
  from evaluation.runs import evaluate_runs
  print(evaluate_runs([w for w, _ in runs]))
  return 0


if __name__ == "__main__":
  run_main(main)

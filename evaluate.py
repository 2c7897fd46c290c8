"""Evaluate trained workdirs and print result tables.

  python evaluate.py --workdir DIR [--lengths 64,128,...]     # one run; saves DIR/eval.json
  python evaluate.py --workdirs A B C --table                 # one markdown row per run

With --table, a workdir that already has an eval.json for its latest step is not re-scored.
"""
from __future__ import annotations

import sys

from absl import flags

from utils.cli import run_main

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir of train.py.")
_WORKDIRS = flags.DEFINE_list("workdirs", None, "Several workdirs (space- or comma-separated).")
_TABLE = flags.DEFINE_bool("table", False, "Print one markdown table row per workdir.")
_LENGTHS = flags.DEFINE_list("lengths", None, "Evaluation lengths (default: the run's eval.lengths).")
_METRIC = flags.DEFINE_enum("metric", "accuracy", ["accuracy", "loss"], "Metric of the table.")


def main(argv) -> int:
  from evaluation.runs import evaluate_runs
  # `--workdirs A B C`: absl leaves B and C in argv; accept them as more workdirs
  extra = [a for a in argv[1:] if not a.startswith("-")]
  dirs = ([_WORKDIR.value] if _WORKDIR.value else []) + list(_WORKDIRS.value or []) + extra
  if not dirs:
    print("error: pass --workdir DIR or --workdirs DIR [DIR ...]", file=sys.stderr)
    return 2
  lengths = [int(x) for x in _LENGTHS.value] if _LENGTHS.value else None
  print(evaluate_runs(dirs, lengths=lengths, table=_TABLE.value or len(dirs) > 1,
                      metric=_METRIC.value))
  return 0


if __name__ == "__main__":
  run_main(main)

"""Evaluate trained workdirs and print result tables.

  python evaluate.py --workdir DIR [--lengths 64,128,...]     # one run; saves DIR/eval.json
  python evaluate.py --workdirs A B C --table                 # one markdown row per run
  python evaluate.py --workdirs A B --entropy                 # mean attention entropy by length
  python evaluate.py --workdir DIR --model_override rope_scaling=ntk \
      --model_override rope_scaling_factor=8                   # NTK-RoPE on a plain-RoPE run
  python evaluate.py --workdir DIR --sts FILE [--sts_split dev] [--whitening_k K]
                                                  # contrastive run: STS Spearman, DIR/sts_eval.json

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
_ENTROPY = flags.DEFINE_bool("entropy", False, "Report the mean attention entropy by length "
                             "instead of MLM accuracy (saved as entropy.json).")
_OVERRIDE = flags.DEFINE_multi_string(
    "model_override", [], "Evaluate with a model field changed, e.g. rope_scaling=ntk or "
    "scale=logn (only fields that do not change the parameters); saved as eval_<...>.json.")
_STS = flags.DEFINE_string("sts", None, "Contrastive runs: STS file (STS Benchmark tsv or "
                           "s1<TAB>s2<TAB>score) or 'synthetic'; prints and saves the Spearman.")
_STS_SPLIT = flags.DEFINE_string("sts_split", "", "Rows of this split (train/dev/test) of an STS "
                                 "Benchmark file with a split column.")
_WHITENING_K = flags.DEFINE_integer("whitening_k", None, "BERT-whitening keeping k dimensions "
                                    "(0 = all); fitted on the evaluation sentences by default.")
_WHITENING_CORPUS = flags.DEFINE_string("whitening_corpus", "", "Fit the whitening on these "
                                        "sentences (one per line) instead.")


def main(argv) -> int:
  from evaluation.runs import evaluate_runs
  # `--workdirs A B C`: absl leaves B and C in argv; accept them as more workdirs
  extra = [a for a in argv[1:] if not a.startswith("-")]
  dirs = ([_WORKDIR.value] if _WORKDIR.value else []) + list(_WORKDIRS.value or []) + extra
  if not dirs:
    print("error: pass --workdir DIR or --workdirs DIR [DIR ...]", file=sys.stderr)
    return 2
  if _STS.value:
    from evaluation.sts import evaluate_sts_workdir
    for d in dirs:
      r = evaluate_sts_workdir(d, _STS.value, split=_STS_SPLIT.value,
                               whitening_k=_WHITENING_K.value,
                               whitening_corpus=_WHITENING_CORPUS.value)
      print(f"{d}: STS Spearman x100 on {r['name']} ({r['pairs']} pairs), step {r['step']}: "
            f"{100 * r['spearman']:.2f}")
    return 0
  lengths = [int(x) for x in _LENGTHS.value] if _LENGTHS.value else None
  if _ENTROPY.value:
    from evaluation.runs import entropy_runs
    print(entropy_runs(dirs, lengths=lengths, overrides=_OVERRIDE.value))
    return 0
  print(evaluate_runs(dirs, lengths=lengths, table=_TABLE.value or len(dirs) > 1,
                      metric=_METRIC.value, overrides=_OVERRIDE.value))
  return 0


if __name__ == "__main__":
  run_main(main)

r"""Run a config's sweep() sequentially and resumably, or print one command per run.

  python sweep.py --config configs/mlm_extrapolation.py --root runs/extrapolation
  python sweep.py --config configs/contrastive_batch.py:BASE_VARIANTS --root runs/cb \
      --in_process --only loss=flatnce --only batch=8+16
  python sweep.py --config configs/mlm_extrapolation.py --root runs/extrapolation --print

Each entry of sweep() (a variant string, appended to the variants of --config and --variant)
trains in ROOT/<entry's name>. A finished run (its latest checkpoint at the config's
train.steps, with its end-of-run evaluation) is skipped; an unfinished one resumes, and one
whose train.steps was raised grows. At the end the runs' task prints its table of them
(evaluate.py --table). --only key=value[+value...][,key=value...] keeps the entries whose
config has those values (keys: the config's variant keys, or dotted config paths); several
--only must all hold.

By default each run is a `train.py` subprocess; --in_process trains every run in this process
instead, which shares the imports and the compiled programs between runs (on a CPU, worth
more than the training itself for many small runs). Compiled programs are also kept in
ROOT/.jax_cache (unless JAX_COMPILATION_CACHE_DIR says otherwise), for the subprocesses and
for the next call. A failed run stops the sweep with one line naming its workdir; SIGTERM or
Ctrl-C stops it after the run in progress has saved a checkpoint, and the same command
resumes.
"""
from __future__ import annotations

import os

from absl import flags

from utils.cli import run_main

_CONFIG = flags.DEFINE_string("config", None, "Config file[:variants]; its sweep() lists the "
                              "runs.")
_ROOT = flags.DEFINE_string("root", None, "Parent directory of the runs' workdirs.")
_BASE = flags.DEFINE_string("variant", "", "Variant string prepended to every sweep entry, "
                            "e.g. 'corpus=my.txt,steps=3000' or 'smoke'.")
_ONLY = flags.DEFINE_multi_string("only", [], "Keep the entries whose config has these values: "
                                  "key=value[+value...][,key=value...], e.g. loss=flatnce or "
                                  "batch=8+16,seed=0.")
_PRINT = flags.DEFINE_bool("print", False, "Print the commands instead of running them.")
_IN_PROCESS = flags.DEFINE_bool("in_process", False, "Train every run in this process "
                                "(shared imports and compiled programs) instead of one "
                                "train.py subprocess per run.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show each run's progress bar.")
flags.mark_flags_as_required(["config", "root"])
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def main(argv) -> int:
  del argv
  # imported here, after absl has parsed the flags: a bad flag fails before JAX loads
  from training import sweep
  points = sweep.plan(_CONFIG.value, _ROOT.value, _BASE.value, _ONLY.value)
  if _PRINT.value:
    print("\n".join(sweep.printed(p) for p in points))
    return 0
  sweep.use_compilation_cache(_ROOT.value)
  status = sweep.run_all(points, in_process=_IN_PROCESS.value, train_script=TRAIN,
                         progress=_PROGRESS.value)
  if status is not None:
    return status
  print(sweep.table(points))
  return 0


if __name__ == "__main__":
  run_main(main)

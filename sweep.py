r"""Run a config's sweep resumably (one run at a time, or N at once), or hand it to a scheduler.

  python sweep.py --config configs/mlm_extrapolation.py --root runs/extrapolation
  python sweep.py --config configs/mlm_extrapolation.py --sweep grid --root runs/grid --jobs 2
  python sweep.py --config configs/contrastive_batch.py:BASE_VARIANTS --root runs/cb \
      --in_process --only loss=flatnce --only batch=8+16
  python sweep.py --config configs/mlm_extrapolation.py --root runs/extrapolation --print
  python sweep.py --config configs/mlm_extrapolation.py --sweep grid --root runs/grid \
      --slurm runs/grid.sbatch [--slurm_time 04:00:00 --slurm_cpus 4 --slurm_partition P]

The config's sweep() (or, with --sweep NAME, its sweeps()[NAME]) is a list of variant strings
or a configs.common.Grid. Each entry (appended to the variants of --config and --variant)
trains in ROOT/<entry's name>. A finished run (its latest checkpoint at the config's
train.steps, with its end-of-run evaluation) is skipped; an unfinished one resumes, and one
whose train.steps was raised grows. At the end the runs' task prints its table of them
(evaluate.py --table). --only key=value[+value...][,key=value...] keeps the entries whose
config has those values (keys: the config's variant keys, or dotted config paths); several
--only must all hold.

By default each run is a `train.py` subprocess; --jobs N runs N of them at once, each writing
its output to ROOT/<run>/train.log. --in_process trains every run in this process instead,
which shares the imports and the compiled programs between runs (on a CPU, worth more than
the training itself for many small runs). Compiled programs are also kept in ROOT/.jax_cache
(unless JAX_COMPILATION_CACHE_DIR says otherwise), for the subprocesses and for the next call.
A failed run stops the launching of runs with one line naming its workdir (with --jobs, the
runs in progress finish first); SIGTERM or Ctrl-C is passed on to the runs in progress, which
save a checkpoint and stop, and the same command resumes.

--print writes one train.py command per run; --slurm FILE writes an sbatch array script whose
task I runs `sweep.py ... --index I`: point I of the plan (0-based, after --only), in process.
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
_SWEEP = flags.DEFINE_string("sweep", "default", "Which of the config's sweeps: default (its "
                             "sweep()) or a name of its sweeps(), e.g. grid.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Train this many runs at once (train.py subprocesses); "
                             "with --slurm, at most this many array tasks at once.",
                             lower_bound=1)
_INDEX = flags.DEFINE_integer("index", None, "Train only the run at this 0-based position of "
                              "the plan (after --only), in this process: a job array's task.",
                              lower_bound=0)
_BASELINE = flags.DEFINE_string("baseline", None, "Add to the final table each row's paired "
                                "difference from this row (a label such as scale=standard, "
                                "or a run); as evaluate.py --baseline.")
_SLURM = flags.DEFINE_string("slurm", None, "Write an sbatch array script for the plan to this "
                             "file (one array task per run) instead of running it.")
_SLURM_TIME = flags.DEFINE_string("slurm_time", "04:00:00", "--slurm: time limit of each task.")
_SLURM_CPUS = flags.DEFINE_integer("slurm_cpus", 4, "--slurm: CPUs per task.", lower_bound=1)
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None, "--slurm: partition (default: "
                                       "the cluster's).")
flags.mark_flags_as_required(["config", "root"])
HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "train.py")
SWEEP = os.path.join(HERE, "sweep.py")


def plan_args() -> list[str]:
  """The flags that choose the plan, as the --slurm script passes them on to --index."""
  args = [f"--config={_CONFIG.value}", f"--root={_ROOT.value}", f"--sweep={_SWEEP.value}"]
  return args + ([f"--variant={_BASE.value}"] if _BASE.value else []) + [
      f"--only={o}" for o in _ONLY.value]


def write_slurm(points) -> None:
  from training import sweep
  from utils.files import atomic_write_text
  name = os.path.splitext(os.path.basename(_CONFIG.value.partition(":")[0]))[0]
  text = sweep.slurm_script(
      points, sweep_args=plan_args(), sweep_script=SWEEP, time_limit=_SLURM_TIME.value,
      cpus=_SLURM_CPUS.value, partition=_SLURM_PARTITION.value, root=_ROOT.value,
      name=name if _SWEEP.value == "default" else f"{name}-{_SWEEP.value}",
      max_parallel=_JOBS.value if flags.FLAGS["jobs"].present else None)
  atomic_write_text(_SLURM.value, text)
  print(f"wrote {_SLURM.value}: {len(points)} array tasks; submit with: sbatch {_SLURM.value}")


def main(argv) -> int:
  del argv
  # imported here, after absl has parsed the flags: a bad flag fails before JAX loads
  from training import sweep
  points = sweep.plan(_CONFIG.value, _ROOT.value, _BASE.value, _ONLY.value, _SWEEP.value)
  if _INDEX.value is not None:
    points = [sweep.pick(points, _INDEX.value)]
  if _PRINT.value:
    print("\n".join(sweep.printed(p) for p in points))
    return 0
  if _SLURM.value:
    write_slurm(points)
    return 0
  sweep.table_options(points, _BASELINE.value)  # a bad table option fails before training
  sweep.use_compilation_cache(_ROOT.value)
  if _INDEX.value is not None:
    return sweep.train_one(points[0], progress=_PROGRESS.value)
  status = sweep.run_all(points, in_process=_IN_PROCESS.value, train_script=TRAIN,
                         progress=_PROGRESS.value, jobs=_JOBS.value)
  if status is not None:
    return status
  print(sweep.table(points, baseline=_BASELINE.value))
  return 0


if __name__ == "__main__":
  run_main(main)

"""Evaluate trained workdirs and print result tables; what is evaluated is the run's task's.

  python evaluate.py --workdir DIR                  # the task's default evaluation of one run
  python evaluate.py --workdirs A B C --table       # one table of several runs of one task

MLM runs (saved as DIR/eval.json; accuracy and loss by length):
  python evaluate.py --workdir DIR [--lengths 64,128,...]
  python evaluate.py --workdirs A B --entropy                 # mean attention entropy by length
  python evaluate.py --workdir DIR --model_override rope_scaling=ntk \
      --model_override rope_scaling_factor=8                   # NTK-RoPE on a plain-RoPE run
Contrastive runs (saved in DIR/sts_eval.json; STS Spearman, by default on the run's own
eval.sts / eval.split / whitening):
  python evaluate.py --workdir DIR [--sts FILE|synthetic] [--sts_split dev] [--whitening_k K]
  python evaluate.py --workdirs runs/cb/* --table [--plot spearman_vs_batch.png]
      # mean ± std over seeds: loss x accumulation (rows) by batch size (columns)

A saved evaluation that is for the run's latest checkpoint (and covers what is asked) is not
computed again. An option of another task than the runs' is refused, and so is a table that
mixes tasks.
"""
from __future__ import annotations

from absl import flags

from utils.cli import run_main
from utils.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir of train.py.")
_WORKDIRS = flags.DEFINE_list("workdirs", None, "Several workdirs (space- or comma-separated).")
_TABLE = flags.DEFINE_bool("table", False, "Print one table of every workdir.")
# options of the tasks' evaluate() and table(): each task declares which it takes
flags.DEFINE_list("lengths", None, "MLM: evaluation lengths (default: the run's eval.lengths).")
flags.DEFINE_enum("metric", "accuracy", ["accuracy", "loss"], "MLM: metric of the table.")
flags.DEFINE_bool("entropy", False, "MLM: report the mean attention entropy by length instead "
                  "of MLM accuracy (saved as entropy.json).")
flags.DEFINE_multi_string(
    "model_override", [], "MLM: evaluate with a model field changed, e.g. rope_scaling=ntk or "
    "scale=logn (only fields that do not change the parameters); saved as eval_<...>.json.")
flags.DEFINE_string("sts", None, "Contrastive: STS file (STS Benchmark tsv or "
                    "s1<TAB>s2<TAB>score) or 'synthetic' (default: the run's eval.sts).")
flags.DEFINE_string("sts_split", None, "Contrastive: rows of this split (train/dev/test) of an "
                    "STS Benchmark file with a split column.")
flags.DEFINE_integer("whitening_k", None, "Contrastive: BERT-whitening keeping k dimensions "
                     "(0 = all); fitted on the evaluation sentences by default.")
flags.DEFINE_string("whitening_corpus", None, "Contrastive: fit the whitening on these "
                    "sentences (one per line) instead.")
flags.DEFINE_string("plot", None, "Contrastive: also save the Spearman-vs-batch plot here.")
flags.DEFINE_string("title", None, "Contrastive: title of the plot (default: the STS set).")
OPTIONS = ("lengths", "metric", "entropy", "model_override", "sts", "sts_split", "whitening_k",
           "whitening_corpus", "plot", "title")


def given_options() -> dict:
  """The task options given on the command line (absent ones keep the task's defaults)."""
  out = {name: flags.FLAGS[name].value for name in OPTIONS if flags.FLAGS[name].present}
  if "lengths" in out:
    try:
      out["lengths"] = [int(n) for n in out["lengths"]]
    except ValueError:
      raise UserError(f"--lengths {','.join(out['lengths'])}: expected integers, e.g. "
                      "--lengths 64,128") from None
  return out


def one_task(dirs):
  """The task of every workdir, refusing a mix."""
  from training.tasks import task_of
  tasks = {d: task_of(d) for d in dirs}
  names = sorted({t.name for t in tasks.values()})
  if len(names) > 1:
    which = ", ".join(f"{d}: {t.name}" for d, t in tasks.items())
    raise UserError(f"the workdirs mix tasks {names} ({which}); evaluate one task at a time")
  return tasks[dirs[0]]


def check_options(task, options: dict, workdir: str) -> None:
  foreign = [name for name in options if name not in task.eval_options]
  if foreign:
    raise UserError(f"--{foreign[0]} is not an option of the {task.name} task, the task of "
                    f"{workdir}; its options: {', '.join('--' + o for o in task.eval_options)}")


def main(argv) -> int:
  # `--workdirs A B C`: absl leaves B and C in argv; accept them as more workdirs
  extra = [a for a in argv[1:] if not a.startswith("-")]
  dirs = ([_WORKDIR.value] if _WORKDIR.value else []) + list(_WORKDIRS.value or []) + extra
  if not dirs:
    raise UserError("pass --workdir DIR or --workdirs DIR [DIR ...]")
  task = one_task(dirs)
  options = given_options()
  check_options(task, options, dirs[0])
  if _TABLE.value or len(dirs) > 1 or options.get("entropy") or options.get("plot"):
    print(task.table(dirs, **options))
  else:
    print(task.describe(dirs[0], task.evaluate(dirs[0], **options)))
  return 0


if __name__ == "__main__":
  run_main(main)

"""Evaluate trained workdirs and print result tables; what is evaluated is the run's task's.

  python evaluate.py --workdir DIR                  # the task's default evaluation of one run
  python evaluate.py --workdirs A B C --table       # one table of several runs of one task
  python evaluate.py --workdirs A B C --table --plot FILE.png [--title T]   # and its plot

MLM runs (saved as DIR/eval.json; accuracy and loss by length; a finished run's summary in
DIR/summary.json):
  python evaluate.py --workdir DIR [--lengths 64,128,...]
  python evaluate.py --workdirs runs/x/* --table [--metric loss]
      # runs that differ only in the seed are one row: mean ± std (n) per length
  python evaluate.py --workdirs runs/x/* --table --baseline scale=standard [--plot acc.png]
      # + rows of the differences from the baseline, paired by seed, with 95% intervals;
      # on a grid (position x scale) scale=standard pairs each row with its own encoding's
  python evaluate.py --summaries docs/results/mlm_runs/*.json --table [--baseline ...]
      # the same tables from summary.json files alone (no checkpoints needed)
  python evaluate.py --workdirs A B --entropy [--plot entropy.png]  # mean attention entropy
  python evaluate.py --workdir DIR --model_override rope_scaling=ntk \
      --model_override rope_scaling_factor=8                   # NTK-RoPE on a plain-RoPE run
Contrastive runs (saved in DIR/sts_eval.json; STS Spearman, by default on the run's own
eval.sts / eval.split / whitening):
  python evaluate.py --workdir DIR [--sts FILE|synthetic] [--sts_split dev] [--whitening_k K]
  python evaluate.py --workdirs runs/cb/* --table [--plot spearman_vs_batch.png]
      # mean ± std over seeds: loss x accumulation (rows) by batch size (columns)
SimBERT runs (contrastive, data.signal=simbert): similar sentences generated from each input
(segment A) and ranked by the cosine similarity of the model's own sentence embeddings:
  python evaluate.py --workdir DIR --generate N [--inputs FILE] [--text "..." --text ...]
      [--strategy greedy|sample|beam] [--top_k K] [--top_p P] [--temperature T]
      [--beam_width W] [--max_new M] [--seed S]
      # inputs: the file's lines (one sentence each), then each --text; the distinct candidates
      # among N, most similar first; greedy: one candidate; sample: N samples (top_k 0 and
      # top_p 1 filter nothing); beam: the
      # N best of W >= N beams (default W = N), length-normalised; max_new counts the [SEP]
      # (default: the length of a sentence in the run's training pairs); nothing is saved

A saved evaluation that is for the run's latest checkpoint (and covers what is asked) is not
computed again. An option of another task than the runs' is refused, and so is a table that
mixes tasks.
"""
from __future__ import annotations

import os

from absl import flags

from utils.cli import run_main
from utils.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir of train.py.")
_WORKDIRS = flags.DEFINE_list("workdirs", None, "Several workdirs (space- or comma-separated).")
_SUMMARIES = flags.DEFINE_list("summaries", None, "Tabulate these summary.json files (runs "
                                "of a task that writes them: mlm) instead of workdirs.")
_TABLE = flags.DEFINE_bool("table", False, "Print one table of every workdir.")
flags.DEFINE_bool("progress", True, "Show a progress bar during long evaluations (only on a "
                  "terminal).")
# options of the tasks' evaluate() and table(): each task declares which it takes
flags.DEFINE_list("lengths", None, "MLM: evaluation lengths (default: the run's eval.lengths).")
flags.DEFINE_enum("metric", "accuracy", ["accuracy", "loss"], "MLM: metric of the table.")
flags.DEFINE_bool("entropy", False, "MLM: report the mean attention entropy by length instead "
                  "of MLM accuracy (saved as entropy.json).")
flags.DEFINE_string("baseline", None, "MLM table: add each row's difference from this row (a "
                    "row label such as scale=standard, or one of the runs), paired by seed, "
                    "with a 95% interval. Values of some keys (scale=standard on a position "
                    "x scale grid): each row's difference from the row with those values and "
                    "its own other values.")
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
flags.DEFINE_integer("generate", None, "Contrastive, signal=simbert: print up to N distinct "
                     "generated similar sentences per input, ranked by cosine similarity.")
flags.DEFINE_string("inputs", None, "--generate: input sentences, one per line.")
flags.DEFINE_multi_string("text", [], "--generate: an input sentence (repeatable).")
flags.DEFINE_enum("strategy", "greedy", ["greedy", "sample", "beam"], "--generate: decoding "
                  "strategy (greedy: one candidate).")
flags.DEFINE_integer("top_k", 0, "--generate, sample: only the k most probable tokens (0: all).")
flags.DEFINE_float("top_p", 1.0, "--generate, sample: only the nucleus of probability p (1: "
                   "all).")
flags.DEFINE_float("temperature", 1.0, "--generate, sample: softmax temperature.")
flags.DEFINE_integer("beam_width", None, "--generate, beam: beams kept (default: N).")
flags.DEFINE_integer("max_new", None, "--generate: most tokens generated per candidate, its "
                     "[SEP] included (default: what the run's pairs held).")
flags.DEFINE_integer("seed", 0, "--generate, sample: random seed.")
flags.DEFINE_string("plot", None, "Also save the table's plot here (MLM: the metric vs length; "
                    "contrastive: Spearman vs batch).")
flags.DEFINE_string("title", None, "Title of the plot (default: what the table shows).")
OPTIONS = ("lengths", "metric", "entropy", "model_override", "baseline", "sts", "sts_split",
           "whitening_k", "whitening_corpus", "plot", "title", "generate", "inputs", "text",
           "strategy", "top_k", "top_p", "temperature", "beam_width", "max_new", "seed")
# options every task's table() takes, whether or not its eval_options lists them
TABLE_OPTIONS = ("plot", "title")
# display options: passed to the tasks that list them, ignored by the others
DISPLAY_OPTIONS = ("progress",)
TABLE_MODE = ("entropy", "plot", "baseline")  # options that make evaluate.py print a table


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


def summary_task(path: str):
  """The task that wrote a summary.json."""
  from training.tasks import task_by_name
  from utils.files import read_json
  if not os.path.isfile(path):
    raise UserError(f"--summaries: {path!r} is not a file")
  try:
    name = read_json(path)["config"]["task"]
  except (ValueError, KeyError, TypeError):
    raise UserError(f"--summaries: {path} is not a summary.json of a run") from None
  return task_by_name(name)


def one_task(dirs, summaries: bool = False):
  """The task of every workdir (or summary), refusing a mix."""
  from training.tasks import task_of
  tasks = {d: summary_task(d) if summaries else task_of(d) for d in dirs}
  names = sorted({t.name for t in tasks.values()})
  if len(names) > 1:
    which = ", ".join(f"{d}: {t.name}" for d, t in tasks.items())
    raise UserError(f"the workdirs mix tasks {names} ({which}); evaluate one task at a time")
  return tasks[dirs[0]]


def check_options(task, options: dict, workdir: str) -> None:
  foreign = [name for name in options if name not in task.eval_options + TABLE_OPTIONS]
  if foreign:
    raise UserError(f"--{foreign[0]} is not an option of the {task.name} task, the task of "
                    f"{workdir}; its options: {', '.join('--' + o for o in task.eval_options)}")


def main(argv) -> int:
  # `--workdirs A B C`: absl leaves B and C in argv; accept them as more workdirs
  # (and `--summaries a.json b.json`: more summaries)
  extra = [a for a in argv[1:] if not a.startswith("-")]
  if _SUMMARIES.value is not None:
    if _WORKDIR.value or _WORKDIRS.value:
      raise UserError("pass either --summaries FILE ... or workdirs, not both")
    dirs = list(_SUMMARIES.value) + extra
  else:
    dirs = ([_WORKDIR.value] if _WORKDIR.value else []) + list(_WORKDIRS.value or []) + extra
  if not dirs:
    raise UserError("pass --workdir DIR, --workdirs DIR [DIR ...] or --summaries FILE [FILE ...]")
  task = one_task(dirs, summaries=_SUMMARIES.value is not None)
  options = given_options()
  check_options(task, options, dirs[0])
  options.update({name: flags.FLAGS[name].value for name in DISPLAY_OPTIONS
                  if name in task.eval_options})
  if (_TABLE.value or len(dirs) > 1 or _SUMMARIES.value is not None or
      any(options.get(name) for name in TABLE_MODE)):
    print(task.table(dirs, **options))
  else:
    print(task.describe(dirs[0], task.evaluate(dirs[0], **options)))
  return 0


if __name__ == "__main__":
  run_main(main)

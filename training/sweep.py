"""A config's sweep: its runs (filtered), their commands, and training them.

sweep.py is the entry point; this is its library side, so that every piece is testable
without a process of its own. See sweep.py for what a sweep does.

A config file names its sweeps: `sweep()` is the default one, and `sweeps()` (optional) maps
more names to sweeps (sweep.py --sweep NAME). Each returns a list of variant strings or a
configs.common.Grid (the product of variant values and seeds, spelled out by its entries()).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import jax

from configs.variants import _typed  # the variant strings' own value parsing
from training.loop import stop_requests
from training.tasks import get_task
from utils.cli import load_config_module
from utils.errors import UserError
from utils.lock import workdir_lock


@dataclasses.dataclass
class Point:
  """One run of the sweep."""
  entry: str  # the sweep() entry
  spec: str  # FILE:variants, as train.py's --config
  workdir: str
  config: object  # the ConfigDict that spec gives


DEFAULT_SWEEP = "default"  # sweep.py --sweep default: the config's sweep()


def load_module(path: str):
  """The config file's module; it must define sweep() or sweeps()."""
  module = load_config_module(path)
  if not hasattr(module, "sweep") and not hasattr(module, "sweeps"):
    raise UserError(f"{path} defines no sweep(); add one that returns a list of variant strings "
                    "or a configs.common.Grid")
  return module


def sweep_names(module) -> list[str]:
  named = list(module.sweeps()) if hasattr(module, "sweeps") else []
  return ([DEFAULT_SWEEP] if hasattr(module, "sweep") else []) + named


def entries(module, path: str, name: str = DEFAULT_SWEEP) -> list[str]:
  """The variant strings of the config's sweep `name` (DEFAULT_SWEEP: its sweep())."""
  if name not in sweep_names(module):
    raise UserError(f"{path} has no sweep {name!r}; its sweeps: {', '.join(sweep_names(module))} "
                    "(--sweep NAME)")
  spec = module.sweep() if name == DEFAULT_SWEEP else module.sweeps()[name]
  listed = spec.entries() if hasattr(spec, "entries") else spec
  if isinstance(listed, str) or not all(isinstance(e, str) for e in listed):
    raise UserError(f"{path}: sweep {name!r} must be a list of variant strings or a "
                    f"configs.common.Grid, not {type(spec).__name__}")
  return list(listed)


def run_name(variant: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.+-]+", "_", variant.replace("=", "-").replace(",", "_")) or "base"


def parse_only(items) -> list[tuple[str, str]]:
  """['loss=flatnce', 'batch=8+16,seed=0'] -> [('loss', 'flatnce'), ('batch', '8+16'), ...]."""
  out = []
  for item in items:
    for part in filter(None, (p.strip() for p in item.split(","))):
      key, sep, value = part.partition("=")
      if not sep or not key.strip():
        raise UserError(f"--only {item!r}: expected key=value[+value...][,key=value...], e.g. "
                        "--only loss=flatnce --only batch=8+16")
      out.append((key.strip(), value.strip()))
  return out


def config_value(config, key: str, shortcuts: dict):
  """The config's value for a variant key (through the config file's shortcuts) or a dotted
  path; a key that is neither is refused listing the variant keys."""
  node = config
  for part in shortcuts.get(key, key).split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      raise UserError(f"--only {key}: neither a variant key nor a config path; variant keys: "
                      f"{sorted(shortcuts)} (or a dotted path such as train.batch_size)")
    node = node[part]
  return node


def matches(config, condition: tuple[str, str], shortcuts: dict) -> bool:
  """Whether config has the value (or one of the '+'-joined values) of a --only condition."""
  key, value = condition
  current = config_value(config, key, shortcuts)
  if isinstance(current, tuple):  # '+' joins a tuple's items here, as in a variant string
    return tuple(current) == _typed(current, value, key)
  return any(current == _typed(current, v, key) for v in value.split("+"))


def plan(config_arg: str, root: str, base: str, only, name: str = DEFAULT_SWEEP) -> list[Point]:
  """The runs of the config's sweep `name`, filtered by --only, in the sweep's order."""
  path, _, file_variants = config_arg.partition(":")
  module = load_module(path)
  shortcuts = getattr(module, "SHORTCUTS", {})
  conditions = parse_only(only)
  prefix = ",".join(v for v in (file_variants, base) if v)
  listed = entries(module, path, name)
  points = []
  for entry in listed:
    full = ",".join(v for v in (prefix, entry) if v)
    config = module.get_config(full)
    if all(matches(config, c, shortcuts) for c in conditions):
      points.append(Point(entry, f"{path}:{full}", os.path.join(root, run_name(entry)), config))
  if not points:
    which = "sweep()" if name == DEFAULT_SWEEP else f"sweep {name!r}"
    raise UserError(f"--only {' --only '.join(only)} keeps none of the {len(listed)} entries "
                    f"of {path}'s {which}")
  return points


def pick(points, index: int) -> Point:
  """--index I: the I-th point of the plan (0-based, after --only), as a job array numbers
  its tasks."""
  if not 0 <= index < len(points):
    raise UserError(f"--index {index} is outside the plan's {len(points)} runs (0 ... "
                    f"{len(points) - 1}); was the sweep or --only changed since the script "
                    "was written?")
  return points[index]


def command(point: Point, train_script: str = "train.py", progress: bool = True) -> list[str]:
  """train.py's command line for the point (the same for a scheduler and for run_all)."""
  return [train_script, f"--config={point.spec}", f"--workdir={point.workdir}",
          *([] if progress else ["--noprogress"])]


def printed(point: Point) -> str:
  """The run's command line as a user types it, one per line for a scheduler."""
  return " ".join(shlex.quote(c) for c in ["python", *command(point)])


@contextlib.contextmanager
def forwarded_signals(state: dict):
  """SIGTERM / SIGINT are remembered and passed on to every run in progress (the Popen objects
  in state['children']), which saves a checkpoint and exits; a second one is passed on too (it
  aborts at once)."""
  state.setdefault("children", [])

  def handler(signum, frame):
    del frame
    state["signal"] = signal.Signals(signum).name
    for child in list(state["children"]):
      if child.poll() is None:
        child.send_signal(signum)

  old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield state
  finally:
    for s, h in old.items():
      signal.signal(s, h)


def start_subprocess(point: Point, state: dict, train_script: str, progress: bool,
                     log=None) -> subprocess.Popen:
  # its own session: a Ctrl-C in the terminal reaches this process only, which passes it on
  # once (the terminal's copy and ours would count as two, and abort the run mid-step)
  child = subprocess.Popen([sys.executable, *command(point, train_script, progress)],
                           start_new_session=True, stdout=log, stderr=log)
  state["children"].append(child)
  return child


def train_subprocess(point: Point, state: dict, train_script: str, progress: bool) -> int:
  child = start_subprocess(point, state, train_script, progress)
  try:
    return child.wait()
  finally:
    state["children"].remove(child)


def train_in_process(point: Point, progress: bool) -> tuple[int, str]:
  """(exit code, why it failed) of training the point here, as train.py would."""
  task = get_task(point.config)
  try:
    with workdir_lock(point.workdir):  # as train.py: one trainer per workdir
      text = task.report(task.train(point.config, point.workdir, progress=progress))
  except UserError as e:
    return 2, str(e)
  if text:
    print(text, flush=True)
  return 0, ""


def use_compilation_cache(root: str) -> None:
  """Keep compiled programs in ROOT/.jax_cache, here and in the runs' subprocesses."""
  cache = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                os.path.abspath(os.path.join(root, ".jax_cache")))
  jax.config.update("jax_compilation_cache_dir", cache)


def failed_line(point: Point, rc: int, why: str = "", log: str = "") -> str:
  where = f"; its output: {log}" if log else ""
  return (f"error: {point.workdir} failed (exit {rc}){': ' + why if why else ''}{where}; fix it "
          "and rerun the same command: finished runs are skipped")


def stopped_line(signal_name: str) -> str:
  return (f"stopped by {signal_name}; rerun the same command to resume (finished runs are "
          "skipped)")


def run_all(points, *, in_process: bool, train_script: str, progress: bool = True,
            jobs: int = 1) -> int | None:
  """Trains every unfinished point: None when all are finished, else the exit code (a failed
  run's, or 0 when stopped by a signal). jobs > 1: that many train.py subprocesses at once."""
  if jobs > 1:
    if in_process:
      raise UserError(f"--jobs {jobs} runs train.py subprocesses side by side; drop "
                      "--in_process (or use --jobs 1)")
    return run_parallel(points, jobs=jobs, train_script=train_script)
  with (stop_requests() if in_process else forwarded_signals({"signal": None})) as state:
    for i, p in enumerate(points):
      where = f"[{i + 1}/{len(points)}] {p.workdir}"
      if state["signal"]:
        break
      if get_task(p.config).finished(p.workdir, p.config):
        print(f"{where}: finished, skipped", file=sys.stderr, flush=True)
        continue
      print(f"{where} <- {p.spec}", file=sys.stderr, flush=True)
      rc, why = (train_in_process(p, progress) if in_process else
                 (train_subprocess(p, state, train_script, progress), ""))
      if rc:
        print(failed_line(p, rc, why), file=sys.stderr)
        return rc
    if state["signal"]:
      print(stopped_line(state["signal"]), file=sys.stderr)
      return 0
  return None


def log_path(point: Point) -> str:
  return os.path.join(point.workdir, "train.log")


def last_error(log: str) -> str:
  """The run's own one-line error from its log ('' if it wrote none)."""
  try:
    with open(log, encoding="utf-8", errors="replace") as f:
      lines = [line.strip() for line in f if line.startswith("error: ")]
  except OSError:
    return ""
  return lines[-1][len("error: "):] if lines else ""


def run_parallel(points, *, jobs: int, train_script: str, poll_s: float = 0.2) -> int | None:
  """Up to `jobs` train.py subprocesses at once, in the plan's order, each writing its output
  to WORKDIR/train.log (a progress bar per run would garble one terminal, so they have none).

  A failed run stops the launching of new ones; the runs in progress finish, and every
  failure is one line naming its workdir. A signal is passed on to every run in progress.
  """
  waiting = collections.deque(enumerate(points))
  running = {}  # Popen -> (index, point, open log file)
  failures = []
  with forwarded_signals({"signal": None}) as state:
    while waiting or running:
      while waiting and len(running) < jobs and not failures and not state["signal"]:
        i, p = waiting.popleft()
        where = f"[{i + 1}/{len(points)}] {p.workdir}"
        if get_task(p.config).finished(p.workdir, p.config):
          print(f"{where}: finished, skipped", file=sys.stderr, flush=True)
          continue
        os.makedirs(p.workdir, exist_ok=True)
        log = open(log_path(p), "a", encoding="utf-8")
        print(f"{where} <- {p.spec} (output: {log_path(p)})", file=sys.stderr, flush=True)
        running[start_subprocess(p, state, train_script, False, log=log)] = (i, p, log)
      if not running:
        break
      time.sleep(poll_s)
      for child in [c for c in running if c.poll() is not None]:
        i, p, log = running.pop(child)
        log.close()
        state["children"].remove(child)
        if child.returncode:
          failures.append(child.returncode)
          print(failed_line(p, child.returncode, last_error(log_path(p)), log_path(p)),
                file=sys.stderr, flush=True)
        else:  # after a signal, a run that exits cleanly has checkpointed and stopped
          print(f"[{i + 1}/{len(points)}] {p.workdir}: {'stopped' if state['signal'] else 'done'}",
                file=sys.stderr, flush=True)
  if failures:
    return failures[0]
  if state["signal"]:
    print(stopped_line(state["signal"]), file=sys.stderr)
    return 0
  return None


def train_one(point: Point, progress: bool = True) -> int:
  """--index: trains one point in this process (skipped if finished); its exit code."""
  with stop_requests() as state:
    if get_task(point.config).finished(point.workdir, point.config):
      print(f"{point.workdir}: finished, skipped", file=sys.stderr, flush=True)
      return 0
    print(f"{point.workdir} <- {point.spec}", file=sys.stderr, flush=True)
    rc, why = train_in_process(point, progress)
  if rc:
    print(failed_line(point, rc, why), file=sys.stderr)
  elif state["signal"]:
    print(stopped_line(state["signal"]), file=sys.stderr)
  return rc


def slurm_script(points, *, sweep_args: list[str], sweep_script: str, time_limit: str,
                 cpus: int, partition: str | None, root: str, name: str,
                 max_parallel: int | None = None) -> str:
  """An sbatch array script: task I runs `sweep.py <sweep_args> --index I`, i.e. point I of
  this plan (finished runs are skipped, so resubmitting it resumes the sweep)."""
  logs = os.path.join(os.path.abspath(root), ".slurm")
  array = f"0-{len(points) - 1}" + (f"%{max_parallel}" if max_parallel else "")
  lines = [
      "#!/bin/bash",
      f"# {len(points)} runs, one per array task; written by sweep.py --slurm. Submit with",
      "# `sbatch THIS_FILE`; resubmitting resumes (finished runs are skipped). Task I trains",
      "# point I of the plan, so write the script again after changing the sweep or --only.",
      "# PYTHON picks the interpreter (default: python on the submitting shell's PATH).",
      f"#SBATCH --job-name={name}",
      f"#SBATCH --array={array}",
      f"#SBATCH --time={time_limit}",
      f"#SBATCH --cpus-per-task={cpus}",
      *([f"#SBATCH --partition={partition}"] if partition else []),
      f"#SBATCH --output={logs}/%A_%a.out",
      # SIGTERM two minutes before the limit to the batch shell, which exec makes the run
      # itself: it saves a checkpoint and exits, and the next submission resumes it
      "#SBATCH --signal=B:TERM@120",
      "set -euo pipefail",
      f"cd {shlex.quote(os.getcwd())}",
      " ".join(['exec "${PYTHON:-python}"', shlex.quote(os.path.abspath(sweep_script)),
                *(shlex.quote(a) for a in sweep_args),
                '--index="$SLURM_ARRAY_TASK_ID"', "--noprogress"]),
  ]
  os.makedirs(logs, exist_ok=True)  # sbatch does not create the directory of --output
  return "\n".join(lines) + "\n"


def table_options(points, baseline=None) -> dict:
  """The final table's options, checked before anything is trained."""
  tasks = {get_task(p.config).name for p in points}
  if len(tasks) > 1:
    raise UserError(f"the sweep mixes tasks {sorted(tasks)}; tabulate each with evaluate.py")
  if baseline is None:
    return {}
  task = get_task(points[0].config)
  if "baseline" not in inspect.signature(task.table).parameters:
    raise UserError(f"--baseline: the {task.name} task's table has no baseline row; leave it "
                    "out")
  return {"baseline": baseline}


def table(points, baseline=None) -> str:
  """The task's table of the sweep's runs (with baseline: the differences from that row)."""
  options = table_options(points, baseline)
  return get_task(points[0].config).table([p.workdir for p in points], **options)

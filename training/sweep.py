"""A config's sweep: its runs (filtered), their commands, and training them in order.

sweep.py is the entry point; this is its library side, so that every piece is testable
without a process of its own. See sweep.py for what a sweep does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys

import jax

from configs.variants import _typed  # the variant strings' own value parsing
from training.loop import stop_requests
from training.tasks import get_task
from utils.cli import load_config_module
from utils.errors import UserError


@dataclasses.dataclass
class Point:
  """One run of the sweep."""
  entry: str  # the sweep() entry
  spec: str  # FILE:variants, as train.py's --config
  workdir: str
  config: object  # the ConfigDict that spec gives


def load_module(path: str):
  """The config file's module; it must define sweep()."""
  module = load_config_module(path)
  if not hasattr(module, "sweep"):
    raise UserError(f"{path} defines no sweep(); add one that returns a list of variant strings")
  return module


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


def plan(config_arg: str, root: str, base: str, only) -> list[Point]:
  """The sweep's runs, filtered by --only."""
  path, _, file_variants = config_arg.partition(":")
  module = load_module(path)
  shortcuts = getattr(module, "SHORTCUTS", {})
  conditions = parse_only(only)
  prefix = ",".join(v for v in (file_variants, base) if v)
  points = []
  for entry in module.sweep():
    full = ",".join(v for v in (prefix, entry) if v)
    config = module.get_config(full)
    if all(matches(config, c, shortcuts) for c in conditions):
      points.append(Point(entry, f"{path}:{full}", os.path.join(root, run_name(entry)), config))
  if not points:
    raise UserError(f"--only {' --only '.join(only)} keeps none of the {len(module.sweep())} "
                    f"entries of {path}'s sweep()")
  return points


def command(point: Point, train_script: str = "train.py", progress: bool = True) -> list[str]:
  """train.py's command line for the point (the same for a scheduler and for run_all)."""
  return [train_script, f"--config={point.spec}", f"--workdir={point.workdir}",
          *([] if progress else ["--noprogress"])]


def printed(point: Point) -> str:
  """The run's command line as a user types it, one per line for a scheduler."""
  return " ".join(shlex.quote(c) for c in ["python", *command(point)])


@contextlib.contextmanager
def forwarded_signals(state: dict):
  """SIGTERM / SIGINT are remembered and passed on to the run in progress (state['child']),
  which saves a checkpoint and exits; a second one is passed on too (it aborts at once)."""

  def handler(signum, frame):
    del frame
    state["signal"] = signal.Signals(signum).name
    child = state.get("child")
    if child is not None and child.poll() is None:
      child.send_signal(signum)

  old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield state
  finally:
    for s, h in old.items():
      signal.signal(s, h)


def train_subprocess(point: Point, state: dict, train_script: str, progress: bool) -> int:
  # its own session: a Ctrl-C in the terminal reaches this process only, which passes it on
  # once (the terminal's copy and ours would count as two, and abort the run mid-step)
  state["child"] = subprocess.Popen([sys.executable, *command(point, train_script, progress)],
                                    start_new_session=True)
  try:
    return state["child"].wait()
  finally:
    state["child"] = None


def train_in_process(point: Point, progress: bool) -> tuple[int, str]:
  """(exit code, why it failed) of training the point here, as train.py would."""
  task = get_task(point.config)
  try:
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


def run_all(points, *, in_process: bool, train_script: str, progress: bool = True) -> int | None:
  """Trains every unfinished point in order: None when all are finished, else the exit code
  (a failed run's, or 0 when stopped by a signal)."""
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
        print(f"error: {p.workdir} failed (exit {rc}){': ' + why if why else ''}; fix it and "
              "rerun the same command: finished runs are skipped", file=sys.stderr)
        return rc
    if state["signal"]:
      print(f"stopped by {state['signal']}; rerun the same command to resume (finished runs "
            "are skipped)", file=sys.stderr)
      return 0
  return None


def table(points) -> str:
  """The task's table of the sweep's runs."""
  tasks = {get_task(p.config).name for p in points}
  if len(tasks) > 1:
    raise UserError(f"the sweep mixes tasks {sorted(tasks)}; tabulate each with evaluate.py")
  return get_task(points[0].config).table([p.workdir for p in points])

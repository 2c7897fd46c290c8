"""The task interface, and the registry that maps config.task to the task.

A task is what a config trains (config.task: "mlm", "contrastive", ...). train.py, evaluate.py
and sweep.py know nothing about any task: they look the task up here and call the interface
below, so a new task is new files only.

The registry is the package: a module `training/<name>.py` that declares a top-level
`TASK = ...` (an object implementing `Task`, with `TASK.name == <name>`) is the task `<name>`.
The declarations are found by reading the modules' source (ast), not by importing them, so
looking a task up imports only that task's module, and a module that declares no TASK (the
loop, the optimizer, ...) is never a task. This module imports no task module by an import
statement (only by name, on lookup); a task module imports it for the interface, usually
declaring `TASK = ModuleTask.of(__name__, name=..., eval_options=...)` over its own
functions of the interface's names.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import os
import sys
from typing import Callable, Protocol, runtime_checkable

from training.workdir import load_config
from utils.errors import ConfigError

PACKAGE = "training"
DEFAULT_TASK = "mlm"  # config.json of runs from before config.task existed


@runtime_checkable
class Task(Protocol):
  """What every task provides (training.mlm.TASK is the reference implementation).

  name: the value of config.task.
  eval_options: the keyword options evaluate() and table() accept: the names of evaluate.py's
    flags that apply to this task (any other is refused naming the task).
  """
  name: str
  eval_options: tuple

  def check_config(self, config) -> None:
    """Refuses (ConfigError, one line) what can be refused before data is read or compiled."""

  def train(self, config, workdir: str, *, overwrite: bool = False, progress: bool = True,
            stop_after: int | None = None):
    """Trains (or resumes, or grows) the run in workdir, then its end-of-run evaluation.

    Returns a training.workdir.TrainResult."""

  def evaluate(self, workdir: str, **options) -> dict:
    """The task's default evaluation of a workdir's latest checkpoint (saved in the workdir;
    an up-to-date saved result is reused); returns the saved result."""

  def describe(self, workdir: str, evaluation: dict) -> str:
    """What evaluate.py --workdir prints for the result of evaluate()."""

  def load(self, workdir: str, with_params: bool = True):
    """A training.workdir.LoadedRun: config, model, tokenizer, params, step (and data)."""

  def finished(self, workdir: str, config=None) -> bool:
    """True when workdir holds config's run (the workdir's own config when None), its latest
    checkpoint is at config.train.steps and its end-of-run evaluation exists for that step."""

  def report(self, result) -> str:
    """What train.py prints for a TrainResult ('' when there is nothing to say)."""

  def table(self, workdirs, **options) -> str:
    """The result table of several runs (evaluate.py --table, and the end of sweep.py)."""


MEMBERS = ("check_config", "train", "evaluate", "describe", "load", "finished", "report",
           "table")


@dataclasses.dataclass(frozen=True)
class ModuleTask:
  """A Task whose members are the functions of the same names in one module."""
  name: str
  eval_options: tuple
  check_config: Callable
  train: Callable
  evaluate: Callable
  describe: Callable
  load: Callable
  finished: Callable
  report: Callable
  table: Callable

  @classmethod
  def of(cls, module: str, *, name: str, eval_options) -> "ModuleTask":
    functions = vars(sys.modules[module])
    return cls(name, tuple(eval_options), **{m: functions[m] for m in MEMBERS})


@functools.cache
def task_names() -> tuple[str, ...]:
  """The modules of the package that declare a top-level TASK, read from their source."""
  directory = os.path.dirname(os.path.abspath(importlib.import_module(PACKAGE).__file__))
  names = []
  for filename in sorted(os.listdir(directory)):
    if filename.endswith(".py") and not filename.startswith("_"):
      with open(os.path.join(directory, filename), encoding="utf-8") as f:
        if _declares_task(f.read()):
          names.append(filename[:-3])
  return tuple(names)


def _declares_task(source: str) -> bool:
  for node in ast.parse(source).body:
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    if any(isinstance(t, ast.Name) and t.id == "TASK" for t in targets):
      return True
  return False


def task_by_name(name: str) -> Task:
  if name not in task_names():
    raise ConfigError(f"unknown task {name!r}; valid names: {list(task_names())}")
  task = importlib.import_module(f"{PACKAGE}.{name}").TASK
  if task.name != name:  # a copied module that kept its original's name
    raise ConfigError(f"{PACKAGE}/{name}.py declares a task named {task.name!r}; a task's "
                      f"name must be its module's name, {name!r}")
  return task


def get_task(config) -> Task:
  """The task of a config (config.task)."""
  return task_by_name(config.get("task", DEFAULT_TASK))


def task_of(workdir: str) -> Task:
  """The task recorded in a workdir's config.json."""
  return get_task(load_config(workdir))

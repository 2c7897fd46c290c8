"""The workdir: config.json, what a resumed run may change, and what a workdir holds.

A workdir belongs to one run. Resuming it with a different config is refused, except for the
keys in RESUMABLE: they change how long the run goes on, how often it logs, checkpoints and
evaluates, and what the end-of-run evaluation scores, never what has been trained so far.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import ml_collections

from model.config import field_defaults
from training import distributed
from training.checkpoint import latest_step
from training.sharding import DEFAULTS as MESH_DEFAULTS
from utils import lock
from utils.errors import UserError
from utils.files import atomic_write_json, read_json

# Keys that may differ when a run resumes ("train this run longer"); a trailing ".*" allows a
# whole section. Everything else must be what the run was started with.
RESUMABLE = (
    "train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "eval.lengths", "eval.at_end", "eval.entropy", "eval.max_tokens", "eval.batch_tokens", "eval.batch_size",
    "eval.sts", "eval.split", "eval.whitening", "eval.whitening_k", "mesh.*",
)
# The learning-rate schedule is a function of train.steps (warmup, then decay to the last
# step): a resumed run that changes it follows the new schedule from the checkpoint on.
SCHEDULE_NOTE = "the learning-rate schedule follows the new train.steps from here on"


class WorkdirError(UserError):
  pass


@dataclasses.dataclass
class TrainResult:
  """What a task's train() returns: the fit, and the end-of-run evaluation (None if none ran)."""
  workdir: str
  fit: Any  # training.loop.FitResult
  evaluation: dict | None


@dataclasses.dataclass
class LoadedRun:
  """What a task's load() returns: everything evaluation needs from a workdir."""
  config: Any
  model: Any
  tokenizer: Any
  params: Any  # None when loaded without parameters
  step: int | None
  data: Any = None  # the task's evaluation data where it comes with the run (MLM: the corpus)


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def flatten(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for k, v in tree.items():
    out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
  return out


def _resumable(key: str) -> bool:
  return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE)


# Keys added after runs were made whose old behaviour was not a constant: what the key's
# value was, in effect, for a run whose config lacks it (read from that config).
LEGACY = {
    "data.split_seed": lambda flat: flat.get("seed"),  # the split used the run's seed
    # the contrastive study's design options; a run from before them had each off
    "loss.similarity": lambda flat: "cosine", "train.epochs": lambda flat: 0.0,
    "train.lr_rule": lambda flat: "constant", "train.lr_base_batch": lambda flat: 64,
    "train.warmup_fraction": lambda flat: 0.0,
    # runs from before the mesh section ran on one device, which the defaults also give there
    "mesh.data": lambda flat: MESH_DEFAULTS["data"], "mesh.fsdp": lambda flat: MESH_DEFAULTS["fsdp"],
}


def differences(old: dict, new: dict) -> list:
  """[(dotted key, old value, new value)] where two config dicts (nested or flat) differ.

  A key that one side lacks is no difference when the other side has the field's declared
  default (the field was added after that run started, and the run used the default), or
  the value LEGACY says the run used in effect.
  """
  defaults = {f"model.{k}": v for k, v in as_stored(field_defaults()).items()}
  a, b = flatten(old), flatten(new)
  out = []
  for key in sorted(set(a) | set(b)):
    if a.get(key) == b.get(key):
      continue
    present = b if key not in a else a if key not in b else None
    if present is not None and key in defaults and defaults[key] == present[key]:
      continue
    lacking = a if key not in a else b if key not in b else None
    if lacking is not None and key in LEGACY and LEGACY[key](lacking) == present[key]:
      continue
    out.append((key, a.get(key), b.get(key)))
  return out


def config_changes(old: dict, new: dict) -> tuple[list, list]:
  """(allowed, forbidden) differences from a run's config to a new one (RESUMABLE or not)."""
  changes = differences(old, new)
  return ([c for c in changes if _resumable(c[0])], [c for c in changes if not _resumable(c[0])])


def as_stored(value):
  """A value as config.json stores it (tuples become lists)."""
  return json.loads(json.dumps(value))


def _changed(changes) -> str:
  return ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, a, b in changes)


def describe_changes(changes) -> str:
  """'train.steps 800 -> 2000, eval.lengths [64] -> [64, 128]' (+ the schedule note)."""
  note = any(k == "train.steps" for k, _, _ in changes)
  return _changed(changes) + (f" ({SCHEDULE_NOTE})" if note else "")


def prepare(workdir: str, config, overwrite: bool = False) -> list:
  """Creates or checks the workdir and writes config.json; returns the changes being resumed.

  A workdir whose config.json differs from this config in a key outside RESUMABLE is refused
  (its checkpoints belong to another experiment), and so is a train.steps below the latest
  checkpoint; overwrite=True deletes the workdir first. Returns [(key, old, new)] of the
  allowed differences, for the line the loop prints when it resumes. A workdir that another
  process is training (utils/lock.py) is refused before anything is touched; train.py holds
  the lock itself, and a caller that does not is at least not let into a locked workdir.

  In a run of several processes (training/distributed.py) the primary does all this while
  the others wait, then read what it wrote (they write nothing here).
  """
  path = os.path.join(workdir, "config.json")
  new = config_to_dict(config)
  if not distributed.is_primary():
    # wait until the primary has checked, emptied and written it (or refused it)
    if distributed.any_process(False):
      raise WorkdirError(f"process 0 refused workdir {workdir!r}; its output says why")
    return config_changes(read_json(path), new)[0] if os.path.exists(path) else []
  failed = True
  try:
    allowed = _prepare(workdir, path, config, new, overwrite)
    failed = False
  finally:
    distributed.any_process(failed)  # what the others wait for
  return allowed


def _prepare(workdir: str, path: str, config, new: dict, overwrite: bool) -> list:
  lock.check(workdir)
  if overwrite and os.path.isdir(workdir):
    _empty(workdir)
  allowed = []
  if os.path.exists(path):
    allowed, forbidden = config_changes(read_json(path), new)
    if forbidden:
      raise WorkdirError(
          f"workdir {workdir!r} holds a run with a different config ({_changed(forbidden[:8])}"
          f"{' ...' if len(forbidden) > 8 else ''}; a resumed run may change only "
          f"{', '.join(RESUMABLE)}); use another --workdir, or pass --overwrite to delete it "
          "and start again")
    _check_steps(workdir, config.train.steps)
  os.makedirs(workdir, exist_ok=True)
  atomic_write_json(path, new)
  return allowed


def _empty(workdir: str) -> None:
  """Deletes what a workdir holds except its lock (held by this process for the new run)."""
  for name in os.listdir(workdir):
    path = os.path.join(workdir, name)
    if name == lock.LOCK_FILE:
      continue
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)


def _check_steps(workdir: str, steps: int) -> None:
  latest = latest_step(workdir)
  if latest is not None and steps < latest:
    raise WorkdirError(
        f"train.steps={steps} is below the latest checkpoint of {workdir!r} (step {latest}); a "
        f"run cannot shrink: pass train.steps >= {latest}, or --overwrite to start again")


def load_config(workdir: str):
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir!r} has no config.json: not a workdir of train.py")
  return ml_collections.ConfigDict(read_json(path))


def reached(workdir: str, config=None) -> bool:
  """True when workdir holds this config's run (no difference outside RESUMABLE) and its
  latest checkpoint is at config.train.steps (the workdir's own config when None)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return False
  saved = read_json(path)
  if config is not None:
    new = config_to_dict(config)
    if config_changes(saved, new)[1]:
      return False
  else:
    new = saved
  return latest_step(workdir) == new["train"]["steps"]


# ---------------------------------------------------------------------------------------------
# A task whose evaluation is one result file for one checkpoint (ner, pet)

def saved_result(workdir: str, filename: str, step) -> dict | None:
  """DIR/filename's result if it is for this checkpoint step (its 'step' field), else None."""
  path = os.path.join(workdir, filename)
  saved = read_json(path) if os.path.exists(path) else None
  return saved if saved is not None and saved.get("step") == step else None


def latest_result(workdir: str, filename: str, score) -> dict:
  """The saved result of the latest checkpoint, or score() (which saves it) when there is
  none for that checkpoint."""
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  saved = saved_result(workdir, filename, latest_step(workdir))
  return saved if saved is not None else score()


def finished_with(workdir: str, config, filename: str) -> bool:
  """config's run is in workdir (the workdir's own config when None), at config.train.steps,
  with its end-of-run result in DIR/filename when eval.at_end asks for one."""
  if not reached(workdir, config):
    return False
  config = config or load_config(workdir)
  return not config.eval.at_end or saved_result(workdir, filename,
                                                config.train.steps) is not None

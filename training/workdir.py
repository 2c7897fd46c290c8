"""The workdir: config.json, and refusing to mix two different runs in one directory."""
from __future__ import annotations

import json
import os
import shutil

from utils.errors import UserError
from utils.files import atomic_write_json, read_json


class WorkdirError(UserError):
  pass


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _diff(a, b, prefix=""):
  keys = sorted(set(a) | set(b)) if isinstance(a, dict) and isinstance(b, dict) else None
  if keys is None:
    return [prefix] if a != b else []
  out = []
  for k in keys:
    out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
  return out


def prepare(workdir: str, config, overwrite: bool = False) -> bool:
  """Creates or checks the workdir; returns True if it holds a run to resume.

  A workdir whose config.json differs from this config is refused (its checkpoints belong to
  another experiment); overwrite=True deletes the workdir first.
  """
  path = os.path.join(workdir, "config.json")
  new = config_to_dict(config)
  if overwrite and os.path.isdir(workdir):
    shutil.rmtree(workdir)
  if os.path.exists(path):
    differs = _diff(read_json(path), new)
    if differs:
      raise WorkdirError(
          f"workdir {workdir!r} holds a run with a different config ({', '.join(differs[:8])}"
          f"{' ...' if len(differs) > 8 else ''} differ); use another --workdir, or pass "
          "--overwrite to delete it and start again")
  os.makedirs(workdir, exist_ok=True)
  resuming = os.path.exists(path)
  atomic_write_json(path, new)
  return resuming


def load_config(workdir: str):
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir!r} has no config.json: not a workdir of train.py")
  return ml_collections.ConfigDict(read_json(path))

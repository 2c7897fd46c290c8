r"""The config of an existing workdir (its config.json), to continue or grow that run.

  python train.py --config configs/workdir.py:runs/bert_zh --workdir runs/bert_zh \
      --config.train.steps=2000

A run imported with convert.py --from_hf, or one whose config file or variants changed since,
resumes under exactly the config it was started with; the keys train.py lets a resumed run
change (training/workdir.py RESUMABLE: the step count, cadence, evaluation) can be overridden
as usual with --config.a.b=value.
"""
from __future__ import annotations

import os

import ml_collections

from training.sharding import DEFAULTS as MESH_DEFAULTS
from utils.errors import ConfigError
from utils.files import read_json


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if not arg:
    raise ConfigError("configs/workdir.py needs the workdir: --config configs/workdir.py:DIR")
  path = os.path.join(arg, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{arg!r} has no config.json: not a workdir of train.py or convert.py")
  config = read_json(path)
  # a run from before the mesh section: give it one, so that --config.mesh.* can be set
  config.setdefault("mesh", dict(MESH_DEFAULTS))
  return ml_collections.ConfigDict(config)

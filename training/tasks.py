"""Registry of trainers: config.task -> the module that trains and evaluates it."""
from __future__ import annotations

import importlib

from utils.errors import ConfigError

TASKS = {
    "mlm": "training.mlm",
    "contrastive": "training.contrastive",
}


def get_task(config):
  name = config.get("task", "mlm")
  if name not in TASKS:
    raise ConfigError(f"unknown task {name!r}; valid names: {sorted(TASKS)}")
  return importlib.import_module(TASKS[name])

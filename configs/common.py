"""Config sections that every experiment config builds the same way.

The model section is built from the model's own declarations (model/config.py: the core
fields and every variant's), so each model field is overridable in every config
(`--config.model.t5_shared=false`, `:rope_scaling=ntk`, ...) and no config restates a default.
"""
from __future__ import annotations

import ml_collections

from model.config import field_defaults
from utils.errors import ConfigError

# optimizer and loop settings the experiments share; each adds its own steps, batch, rates
# and cadence (train_section)
TRAIN_DEFAULTS = dict(
    end_lr_fraction=0.0,
    weight_decay=0.01,
    b1=0.9, b2=0.98, eps=1e-6,
    clip_norm=1.0,
    on_nonfinite="stop",  # stop: error naming the step; skip: drop the update, count it
)


def model_section(**overrides) -> ml_collections.ConfigDict:
  """Every model field (but vocab_size, from the tokenizer) at its declared default, then the
  experiment's values."""
  fields = field_defaults()
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"unknown model fields {unknown}; valid fields: {sorted(fields)}")
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def train_section(**fields) -> ml_collections.ConfigDict:
  """The experiment's train fields (steps, batch_size, learning_rate, warmup_steps, schedule:
  cosine | linear | constant after warmup, cadence) on top of TRAIN_DEFAULTS."""
  return ml_collections.ConfigDict(dict(TRAIN_DEFAULTS, **fields))

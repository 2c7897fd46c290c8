"""Config sections that every experiment config builds the same way.

The model section is built from the model's own declarations (model/config.py: the core
fields and every variant's), so each model field is overridable in every config
(`--config.model.t5_shared=false`, `:rope_scaling=ntk`, ...) and no config restates a default.
A sweep may be written as a Grid (the product of variant values and seeds) instead of listing
its variant strings.
"""
from __future__ import annotations

import dataclasses
import itertools

import ml_collections

from model.config import field_defaults
from training.sharding import DEFAULTS as MESH_DEFAULTS
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


# the variant keys that the downstream-task configs (ner, pet) share: budget, seed, encoder size
FINE_TUNING_SHORTCUTS = {
    "steps": "train.steps",
    "batch": "train.batch_size",
    "lr": "train.learning_rate",
    "warmup": "train.warmup_steps",
    "seed": "seed",
    "width": "model.width",
    "layers": "model.num_layers",
    "heads": "model.num_heads",
    "mlp": "model.mlp_dim",
    "dropout": "model.dropout",
}


def train_section(**fields) -> ml_collections.ConfigDict:
  """The experiment's train fields (steps, batch_size, learning_rate, warmup_steps, schedule:
  cosine | linear | constant after warmup, cadence) on top of TRAIN_DEFAULTS."""
  return ml_collections.ConfigDict(dict(TRAIN_DEFAULTS, **fields))


def mesh_section() -> ml_collections.ConfigDict:
  """The device mesh (training/sharding.py): mesh.data x mesh.fsdp devices; the batch is split
  over both, parameters and optimizer state over fsdp. mesh.data=0: every device fsdp leaves
  (the default puts all devices on data)."""
  return ml_collections.ConfigDict(MESH_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class Grid:
  """A sweep as a product: every combination of the axes' values, for every seed.

  axes: {variant key: [values]}, e.g. {"position": ["rope", "t5"], "scale": ["standard",
  "logn"]}. seeds: () keeps the config's own seed; else each combination once per seed.
  entries() spells it as variant strings (what sweep.py runs) in a fixed order: the seed
  varies slowest (the whole grid at the first seed, then at the next, so that a partial sweep
  already compares every point), then the axes in the order given, the last one fastest:
  Grid({"scale": ["standard", "logn"]}, seeds=[0, 1]) is scale=standard,seed=0,
  scale=logn,seed=0, scale=standard,seed=1, scale=logn,seed=1.
  """
  axes: dict
  seeds: tuple = ()

  def __post_init__(self):
    empty = [k for k, values in self.axes.items() if not list(values)]
    if not self.axes or empty:
      raise ConfigError(f"Grid axes {empty or '{}'} have no values; give each axis at least one")
    if "seed" in self.axes:
      raise ConfigError("Grid: give the seeds as Grid(..., seeds=[...]), not as an axis")

  def entries(self) -> list[str]:
    combos = list(itertools.product(*[[(k, v) for v in values]
                                      for k, values in self.axes.items()]))
    return [",".join([f"{k}={variant_text(v)}" for k, v in combo] +
                     ([] if seed is None else [f"seed={seed}"]))
            for seed in (tuple(self.seeds) or (None,)) for combo in combos]


def variant_text(value) -> str:
  """A value as a variant string writes it: true/false, '+' between a tuple's items."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    return "+".join(variant_text(v) for v in value)
  return str(value)

"""`file.py:key=value,flag,...` variant strings for config files (big_vision style).

Each config file names its shortcuts (variant key -> dotted config path). Values are parsed to
the type of the field they replace, so `steps=100` is an int and `remat=true` a bool. Unknown
keys fail with the list of valid ones.
"""
from __future__ import annotations

from utils.errors import ConfigError

import ml_collections


def parse(arg: str | None) -> dict[str, str | None]:
  """'a=1,smoke,b=x' -> {'a': '1', 'smoke': None, 'b': 'x'}."""
  out = {}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, sep, value = part.partition("=")
    out[key.strip()] = value.strip() if sep else None
  return out


def _typed(old, value: str, key: str):
  if isinstance(old, bool):
    if value.lower() in ("true", "1", "yes"):
      return True
    if value.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"variant {key}={value!r}: expected true or false")
  if isinstance(old, int):
    return int(value)
  if isinstance(old, float):
    return float(value)
  if isinstance(old, tuple):
    return tuple(type(old[0])(v) for v in value.split("+")) if old else tuple(value.split("+"))
  return value


def apply(config: ml_collections.ConfigDict, options: dict, shortcuts: dict[str, str],
          flags: dict) -> ml_collections.ConfigDict:
  """Applies flag variants (functions of the config) first, then key=value shortcuts."""
  for key, value in options.items():
    if value is None:
      if key not in flags:
        raise ConfigError(f"unknown config flag {key!r}; valid flags: {sorted(flags)}, "
                         f"valid keys: {sorted(shortcuts)}")
      flags[key](config)
  for key, value in options.items():
    if value is None:
      continue
    if key not in shortcuts:
      raise ConfigError(f"unknown config variant {key!r}; valid keys: {sorted(shortcuts)}, "
                       f"valid flags: {sorted(flags)}")
    *parents, leaf = shortcuts[key].split(".")
    node = config
    for p in parents:
      node = node[p]
    try:
      node[leaf] = _typed(node[leaf], value, key)
    except ValueError as e:
      raise ConfigError(f"config variant {key}={value!r}: {e}") from None
  return config


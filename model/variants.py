"""How a variant describes itself: its config fields, what it needs and what it provides.

Every position encoding (model/positions/), attention kernel (model/attention/) and attention
scale (model/scales/) declares itself in its own file, next to its math, as a module-level
`VARIANT = ...Variant(...)` (or `VARIANTS = [...]` when one file holds several). The registries
are built by discovering those declarations (`Registry`), and ModelConfig's fields are the core
fields plus every declared `Field` (model/config.py). So a new variant is one new file: nothing
else lists it.
"""
from __future__ import annotations

import dataclasses
import importlib
import numbers
import pkgutil
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np

from utils.errors import ConfigError, UserError

Array = Any
Config = Any  # a ModelConfig (model/config.py builds it from these declarations)

REQUIRED = object()  # Field.default of a field that has none (vocab_size)


class DeclarationError(TypeError):
  """A variant declares something inconsistent or incomplete: a bug in its file, not user input."""


class LengthBoundError(UserError):
  """Raised when a length-bound encoding or attention is asked for a longer sequence."""


def _type_error(value, kind: type) -> Optional[str]:
  """The message for a value of the wrong type, or None. numbers.* accepts numpy scalars."""
  if kind is bool:
    ok = isinstance(value, (bool, np.bool_))
  elif kind is int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  elif kind is float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  else:
    ok = isinstance(value, kind)
  return None if ok else f"expected a {kind.__name__}, got {type(value).__name__}"


@dataclasses.dataclass(frozen=True)
class Field:
  """One model-config field: `model.<name>` in every config file.

  check(value, cfg) returns None for a valid value, else one line saying what is valid (the
  valid range or names); it may read other fields of cfg. The type (that of `default`) is
  checked first. `bad` are values the check refuses (its documentation by example, and what
  tests/test_variants.py feeds it). eval_time: the field only changes how a trained model
  computes, not its parameters, so evaluation may change it (RoPE scaling, the log-n scale).
  """
  name: str
  default: Any
  doc: str
  check: Callable[[Any, Config], Optional[str]]
  eval_time: bool = False
  bad: tuple = ()
  kind: Optional[type] = None  # only for a REQUIRED field; otherwise type(default)

  @property
  def type(self) -> type:
    return self.kind if self.kind is not None else type(self.default)

  def validate(self, cfg) -> None:
    value = getattr(cfg, self.name)
    message = _type_error(value, self.type) or self.check(value, cfg)
    if message:
      raise ConfigError(f"model.{self.name}={value!r}: {message}")


# ------------------------------------------------------------------ checks for Field.check

def any_value(value, cfg) -> None:
  """For fields whose type is their only constraint (booleans)."""
  del value, cfg


def positive(value, cfg) -> Optional[str]:
  del cfg
  return None if value > 0 else "must be positive"


def at_least(low) -> Callable[[Any, Config], Optional[str]]:
  return lambda value, cfg: None if value >= low else f"must be >= {low}"


def fraction(value, cfg) -> Optional[str]:
  del cfg
  return None if 0.0 <= value < 1.0 else "must be in [0, 1)"


def one_of(names, what: str = "name") -> Callable[[Any, Config], Optional[str]]:
  """Membership in `names` (any container; read at check time, so a registry works)."""
  return lambda value, cfg: (None if value in names else
                             f"unknown {what}; valid names: {sorted(names)}")


def non_default(cfg, variant) -> str:
  """' with a=1, b=2' for the variant's fields that differ from their defaults (or ''): how
  a refusal names the configuration of a variant."""
  options = [f"{f.name}={getattr(cfg, f.name)}" for f in variant.fields
             if getattr(cfg, f.name) != f.default]
  return f" with {', '.join(options)}" if options else ""


# ---------------------------------------------------------------------- the declarations

def never(cfg) -> bool:
  del cfg
  return False


def unbounded(cfg) -> None:
  """Length bound of a variant that runs at any length."""
  del cfg


def no_terms(cfg) -> frozenset:
  """Terms of a position encoding that adds nothing inside attention (absolute ones, NoPE)."""
  del cfg
  return frozenset()


def no_checks(cfg) -> None:
  del cfg


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
  """What every variant declares: its name, a one-line doc, the fields it owns (a field used
  by several variants is one Field object listed by each), and its cross-field checks, run
  when the variant is chosen (raise ConfigError).

  build_check(cfg): checks of fields that a task fills in when it builds the model config
  (rope_original_length: 0 in a config file, the training length once resolved), run by the
  attention layer when it is built rather than by ModelConfig.validate, so that a config
  file's model section is valid before the task resolves them.
  """
  name: str
  doc: str
  fields: tuple = ()
  check: Callable[[Config], None] = no_checks
  build_check: Callable[[Config], None] = no_checks


@dataclasses.dataclass(frozen=True, kw_only=True)
class PositionVariant(Variant):
  """A position encoding (`model.position`).

  terms(cfg): the RelativeTerms fields (model/positions/base.py) its relative module returns
  under cfg; kernels that cannot apply one of them refuse the encoding, and the attention
  layer refuses, at trace time, any term the module returns that is not declared here.
  absolute(cfg) -> module(x, positions) -> x, once on the embeddings; relative(cfg) ->
  module(q_pos, k_pos, causal) -> RelativeTerms, in attention. shared(cfg): one relative
  module for the whole encoder, built once per forward pass and given to every layer (its
  terms must then be arrays).
  """
  terms: Callable[[Config], frozenset]
  max_length: Callable[[Config], Optional[int]]
  absolute: Optional[Callable[[Config], Any]] = None
  relative: Optional[Callable[[Config], Any]] = None
  shared: Callable[[Config], bool] = never


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusedForm:
  """A kernel's form as one call of jax.nn.dot_product_attention (model.attention_impl=fused:
  JAX's choice of implementation, XLA's attention in jax 0.10; cudnn: cuDNN's fused kernel).

  honours: the RelativeTerms fields it can express (as a rotation of q and k, a factor on q,
  or its `bias`); cannot: {field: why not} for every other field, the reason a configuration
  that needs it is refused at start-up. The fused call forms no probabilities, so attention
  dropout is refused with it. fn(q, k, v, inputs, cfg, implementation) -> out, implementation
  being dot_product_attention's (None or "cudnn"; model/attention/fused.py).
  """
  fn: Callable[..., Array]
  honours: frozenset
  cannot: Mapping[str, str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelVariant(Variant):
  """An attention kernel (`model.attention`).

  honours: the RelativeTerms fields it applies; masks: what it honours beyond key padding
  ("causal", "window", "any" = an arbitrary [q, k] mask); probabilities: it forms attention
  probabilities, so model.attention_dropout applies; uses_scale: it applies model.scale;
  transforms_logits: it forms the full [q, k] logits and calls AttentionInputs.logits_transform
  on them before the softmax (a scale that declares a logits_transform refuses other kernels).
  fn(q, k, v, inputs, cfg) -> out, or module(cfg) -> a linen module (q, k, v, inputs) -> out.
  fused: the same attention through one fused call, where the kernel has such a form.
  """
  honours: frozenset
  masks: frozenset
  probabilities: bool
  uses_scale: bool
  max_length: Callable[[Config], Optional[int]]
  fn: Optional[Callable[..., Array]] = None
  module: Optional[Callable[[Config], Any]] = None
  transforms_logits: bool = False
  fused: Optional[FusedForm] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaleVariant(Variant):
  """An attention logit scale (`model.scale`).

  factor(n_keys [b, 1, q, 1] int, head_dim, cfg) -> lambda (float32, same shape);
  by_position: factor's first argument is instead the query's 1-based position [1|b, 1, q, 1]
  (a scale of where the query is; in a bidirectional model that is not its key count);
  query_init_std(width, head_dim): the std of W_q's initialisation when the scale needs one;
  logits_transform(logits [b, h, q, k] float32, mask [b, 1, q, k], cfg) -> logits: for a scale
  that is a function of the logits themselves (entropy_norm), applied after the factor and
  every position term, before the softmax, by the kernels that declare transforms_logits.
  """
  factor: Callable[[Array, int, Config], Array]
  by_position: bool = False
  query_init_std: Optional[Callable[[int, int], float]] = None
  logits_transform: Optional[Callable[[Array, Array, Config], Array]] = None


# ------------------------------------------------------------------------- registries

def declarations(module) -> list:
  """The variants a module declares: its VARIANT and the entries of its VARIANTS."""
  one = getattr(module, "VARIANT", None)
  return ([one] if one is not None else []) + list(getattr(module, "VARIANTS", ()))


class Registry(Mapping):
  """name -> variant, for every declaration in the modules of a package, sorted by name.

  Discovered on first use (not at import) so that a module of the package may import the
  package itself (model/attention/layer.py reads the kernel registry). Modules that declare
  nothing (base and helper modules) are skipped; a name declared twice is refused.
  """

  def __init__(self, package: str, kind: type, what: str):
    self.package, self.kind, self.what = package, kind, what
    self._entries: Optional[dict] = None

  def _load(self) -> dict:
    if self._entries is None:
      found, where = {}, {}
      path = importlib.import_module(self.package).__path__
      for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        module = importlib.import_module(f"{self.package}.{info.name}")
        for variant in declarations(module):
          if not isinstance(variant, self.kind):
            raise DeclarationError(f"{module.__name__} declares {variant!r}, not a "
                                   f"{self.kind.__name__}")
          if variant.name in found:
            raise DeclarationError(f"{self.what} {variant.name!r} is declared twice: in "
                                   f"{where[variant.name]} and {module.__name__}")
          found[variant.name], where[variant.name] = variant, module.__name__
      self._entries = dict(sorted(found.items()))
    return self._entries

  def __getitem__(self, name: str):
    return self._load()[name]

  def __iter__(self):
    return iter(self._load())

  def __len__(self) -> int:
    return len(self._load())

  def lookup(self, name: str):
    """The variant called `name`; an unknown name is a ConfigError listing the valid ones."""
    if name not in self:
      raise ConfigError(f"unknown {self.what} {name!r}; valid names: {sorted(self)}")
    return self[name]

  def fields(self) -> list:
    """Every field its variants declare, once each, in registry order."""
    return unique_fields(f for v in self.values() for f in v.fields)


def unique_fields(fields) -> list:
  """Fields in order, a Field listed by several variants kept once; two different Fields of
  one name are refused (a field is declared in one place)."""
  out = {}
  for f in fields:
    if f.name in out and out[f.name] is not f:
      raise DeclarationError(f"model.{f.name} is declared twice; declare it once and list "
                             "that Field in every variant that uses it")
    out[f.name] = f
  return list(out.values())

"""The model's hyperparameters as a frozen, hashable dataclass (built from config.model).

ModelConfig is built from declarations: the core fields below, which belong to no variant,
plus every Field that a position encoding, attention kernel or scale declares in its own file
(model/variants.py). Validation lives here so that a bad value is refused before anything is
compiled: every field's own check, the chosen variants' checks, then what the chosen position
encoding, kernel and masks need of each other.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from model.activations import ACTIVATIONS
from model.attention import ATTENTIONS
from model.embeddings import EMBEDDING_SIZE, TYPE_VOCAB_SIZE
from model.norms import NORM_EPSILON, NORMS
from model.positions import POSITIONS
from model.scales import SCALES
from model.variants import (REQUIRED, Field, any_value, at_least, fraction, non_default, one_of,
                            positive, unique_fields)
from utils.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")

CORE_FIELDS = (
    Field("vocab_size", REQUIRED, "token vocabulary size (from the tokenizer)", positive,
          kind=int, bad=(0,)),
    Field("width", 256, "model width D", positive, bad=(0,)),
    Field("num_layers", 4, "number of Transformer blocks", positive, bad=(0,)),
    Field("num_heads", 4, "attention heads (must divide the width)", positive, bad=(0,)),
    Field("mlp_dim", 1024, "hidden size of each block's MLP", positive, bad=(0,)),
    Field("dropout", 0.1, "dropout on embeddings and sublayer outputs", fraction, bad=(1.0,)),
    Field("attention_dropout", 0.0, "dropout on attention probabilities (kernels that form "
          "them)", fraction, bad=(-0.1,)),
    Field("position", "rope", "position encoding (model/positions/)",
          one_of(POSITIONS, "position"), bad=("bogus",)),
    Field("max_len", 512, "table size of the length-bound variants (position=learned, "
          "synthesizers)", positive, bad=(0,)),
    Field("attention", "softmax", "attention kernel (model/attention/)",
          one_of(ATTENTIONS, "attention"), bad=("bogus",)),
    Field("scale", "logn", "attention logit scale (model/scales/)", one_of(SCALES, "scale"),
          eval_time=True, bad=("bogus",)),
    Field("causal", False, "left-to-right attention (causal mask)", any_value),
    Field("window", 0, "sliding-window mask: keys with |i - j| < window (0: no window)",
          at_least(0), eval_time=True, bad=(-1,)),
    Field("norm", "post", "post-LN (BERT), pre-LN, or pre-norm RMSNorm", one_of(NORMS, "norm"),
          bad=("bogus",)),
    NORM_EPSILON,  # these three: model/norms.py, model/embeddings.py
    TYPE_VOCAB_SIZE,
    EMBEDDING_SIZE,
    Field("activation", "gelu", "MLP activation (model/activations.py)",
          one_of(ACTIVATIONS, "activation"), bad=("bogus",)),
    Field("remat", False, "recompute each block's activations in the backward pass", any_value),
    Field("dtype", "float32", "compute dtype; parameters stay float32", one_of(DTYPES, "dtype"),
          bad=("float64",)),
)

# every field, core first, then the variants' in registry order (a field listed by several
# variants once; two declarations of one name are refused)
FIELDS = tuple(unique_fields((*CORE_FIELDS, *POSITIONS.fields(), *ATTENTIONS.fields(),
                              *SCALES.fields())))

MASK_WORDS = {"causal": "a causal mask (model.causal)", "window": "a window mask (model.window)",
              "any": "an arbitrary [q, k] mask (UniLM segments)"}


def field_defaults() -> dict:
  """Every model field but vocab_size (which comes from the tokenizer), at its default."""
  return {f.name: f.default for f in FIELDS if f.default is not REQUIRED}


def eval_time_fields() -> frozenset:
  """Fields that change how a trained model computes but not its parameters: evaluation may
  change them (e.g. NTK-scaled RoPE, or the log-n scale, on a model trained without)."""
  return frozenset(f.name for f in FIELDS if f.eval_time)


def require_mask(cfg, kind: str) -> None:
  """Refuse a mask (a key of MASK_WORDS) that cfg's attention kernel cannot apply."""
  kernel = ATTENTIONS.lookup(cfg.attention)
  if kind not in kernel.masks:
    also = " and ".join(sorted(kernel.masks)) or "nothing else"
    able = "|".join(k.name for k in ATTENTIONS.values() if kind in k.masks)
    raise ConfigError(f"attention={kernel.name} cannot apply {MASK_WORDS[kind]}: it honours key "
                      f"padding and {also}; use attention={able}")


def check_combination(cfg) -> None:
  """Refuse what the chosen kernel cannot honour: position terms, masks, attention dropout."""
  position, kernel = POSITIONS[cfg.position], ATTENTIONS[cfg.attention]
  needs = position.terms(cfg)
  missing = sorted(needs - kernel.honours)
  if missing:
    kernels = "|".join(k.name for k in ATTENTIONS.values() if needs <= k.honours)
    positions = "|".join(p.name for p in POSITIONS.values() if p.terms(cfg) <= kernel.honours)
    raise ConfigError(
        f"attention={kernel.name} cannot apply position={cfg.position}"
        f"{non_default(cfg, position)} (needs {missing}); use attention={kernels} or a "
        f"position it supports: {positions}")
  if cfg.causal:
    require_mask(cfg, "causal")
  if cfg.window > 0:
    require_mask(cfg, "window")
  if cfg.attention_dropout > 0 and not kernel.probabilities:
    able = "|".join(k.name for k in ATTENTIONS.values() if k.probabilities)
    raise ConfigError(f"attention={kernel.name} has no attention matrix to drop out; set "
                      f"model.attention_dropout=0 or use attention={able}")


class _Methods:
  """ModelConfig's methods (the fields come from the declarations)."""

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def embed_width(self) -> int:
    """Width of the token embedding table and of the MLM head's output."""
    return self.embedding_size or self.width

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ConfigError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
    cfg = cls(**dict(d))
    cfg.validate()
    return cfg

  @classmethod
  def for_run(cls, model_section: Mapping[str, Any], *, vocab_size: int, train_length: int):
    """The model of a run: its config's model section with the tokenizer's vocabulary size,
    and rope_original_length 0 resolved to the run's training length (dynamic_ntk, yarn,
    logn_qwen are defined against it)."""
    d = dict(model_section, vocab_size=vocab_size)
    d["rope_original_length"] = d.get("rope_original_length", 0) or train_length
    return cls.from_dict(d)

  def validate(self) -> None:
    for f in FIELDS:
      f.validate(self)
    if self.width % self.num_heads:
      raise ConfigError(f"model.num_heads={self.num_heads} does not divide "
                        f"model.width={self.width}; pick a divisor of the width")
    for variant in (POSITIONS[self.position], ATTENTIONS[self.attention], SCALES[self.scale]):
      variant.check(self)
    check_combination(self)

  def max_length(self):
    """Longest sequence this model can encode, or None if unbounded."""
    bounds = [b for b in (POSITIONS[self.position].max_length(self),
                          ATTENTIONS[self.attention].max_length(self)) if b is not None]
    return min(bounds) if bounds else None


def _spec(f: Field):
  if f.default is REQUIRED:
    return (f.name, f.type)
  return (f.name, f.type, dataclasses.field(default=f.default))


def _docstring() -> str:
  lines = ["The model's hyperparameters: every field with its default and meaning.", ""]
  for f in FIELDS:
    default = "required" if f.default is REQUIRED else repr(f.default)
    lines.append(f"  {f.name} ({default}): {f.doc}")
  return "\n".join(lines)


ModelConfig = dataclasses.make_dataclass(
    "ModelConfig", [_spec(f) for f in FIELDS], bases=(_Methods,), frozen=True,
    namespace={"__module__": __name__, "__doc__": _docstring()})

"""Every registered variant declares all that the design asks of it (model/variants.py), the
registries and ModelConfig are built from those declarations, and what they declare is what
they do: a kernel that says it forms no probabilities is unaffected by attention dropout, one
that says it ignores the scale is unaffected by it, an encoding's returned terms are its
declared ones, and every (position, kernel) pair is either accepted and traces or refused
naming what is missing."""
import dataclasses
import re
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import contrastive_batch, mlm_extrapolation
from model.attention import ATTENTIONS, get_attention
from model.attention.base import ALL_MASKS
from model.attention.layer import MultiHeadAttention
from model.config import CORE_FIELDS, ModelConfig, eval_time_fields, field_defaults
from model.encoder import Encoder
from model.masks import padding_mask
from model.positions import POSITIONS, checked_terms, get_position
from model.positions.alibi import Alibi
from model.positions.base import TERM_NAMES
from model.scales import SCALES, get_scale
from model.variants import (REQUIRED, DeclarationError, Field, KernelVariant, PositionVariant,
                            Registry, ScaleVariant, no_terms, unbounded)
from utils.errors import ConfigError

REGISTRIES = {"position": POSITIONS, "attention": ATTENTIONS, "scale": SCALES}
VARIANTS = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg]
TYPES = (bool, int, float, str)


def _cfg(**kw):
  """A small valid config; length-bound kernels get a learned table."""
  base = dict(vocab_size=30, width=16, num_heads=2, num_layers=1, mlp_dim=32, dropout=0.0,
              max_len=32, performer_features=8, nystrom_landmarks=4, relative_clip=4)
  base.update(kw)
  return ModelConfig(**base)


def _chosen(kind, name):
  """A config that chooses the variant (with a position a synthesizer can take)."""
  kw = {kind: name}
  if kind == "attention" and not ATTENTIONS[name].honours:
    kw["position"] = "none"
  return _cfg(**kw)


def _all_declared_fields():
  return [f for reg in REGISTRIES.values() for v in reg.values() for f in v.fields]


# ------------------------------------------------------------- what every declaration holds

def _check_field(f):
  assert isinstance(f, Field)
  assert f.name.isidentifier() and f.doc.strip() and "\n" not in f.doc, f
  assert callable(f.check) and isinstance(f.eval_time, bool), f
  assert f.type in TYPES, f"model.{f.name}: type {f.type} is none of {TYPES}"
  if f.default is not REQUIRED:
    assert type(f.default) is f.type, f
    assert f.check(f.default, _cfg()) is None, f"model.{f.name}: its default is refused"
  if f.type is not bool:  # a boolean has no value of its type to refuse
    assert f.bad, f"model.{f.name} declares no value its check refuses"


@pytest.mark.parametrize("kind,name", VARIANTS)
def test_every_variant_declares_everything(kind, name):
  v = REGISTRIES[kind][name]
  assert v.name == name and v.doc.strip() and "\n" not in v.doc
  assert isinstance(v.fields, tuple) and callable(v.check)
  for f in v.fields:
    _check_field(f)
  cfg = _chosen(kind, name)
  cfg.validate()  # the variant with its defaults is a valid choice
  if kind == "position":
    assert isinstance(v, PositionVariant)
    terms = v.terms(cfg)
    assert isinstance(terms, frozenset) and terms <= set(TERM_NAMES), terms
    # terms come from a relative module, and a relative module contributes terms
    assert bool(terms) == (v.relative is not None), name
    bound = v.max_length(cfg)
    assert bound is None or isinstance(bound, int)
    assert isinstance(v.shared(cfg), bool)
    if v.shared(cfg):  # only arrays can be computed once and handed to every layer
      assert terms <= {"bias"}, terms
  elif kind == "attention":
    assert isinstance(v, KernelVariant)
    assert v.honours <= set(TERM_NAMES) and v.masks <= ALL_MASKS
    assert isinstance(v.probabilities, bool) and isinstance(v.uses_scale, bool)
    assert (v.fn is None) != (v.module is None), "exactly one of fn and module"
    bound = v.max_length(cfg)
    assert bound is None or isinstance(bound, int)
  else:
    assert isinstance(v, ScaleVariant)
    lam = v.factor(jnp.array([[[[5], [600]]]]), 16, cfg)
    assert lam.shape == (1, 1, 2, 1) and lam.dtype == jnp.float32
    if v.query_init_std is not None:
      assert v.query_init_std(256, 64) > 0


def test_field_names_are_unique_and_config_has_exactly_them():
  by_name = {}
  for f in [*CORE_FIELDS, *_all_declared_fields()]:
    # a field used by several variants is one declaration listed by each (relative_clip)
    assert by_name.setdefault(f.name, f) is f, f"model.{f.name} is declared twice"
  assert by_name["relative_clip"] in POSITIONS["shaw"].fields
  assert by_name["relative_clip"] in POSITIONS["deberta"].fields
  assert {f.name for f in dataclasses.fields(ModelConfig)} == set(by_name)
  # the core fields are those that belong to no variant
  assert {f.name for f in CORE_FIELDS} == {
      "vocab_size", "width", "num_layers", "num_heads", "mlp_dim", "dropout",
      "attention_dropout", "position", "attention", "scale", "causal", "window", "max_len",
      "norm", "activation", "remat", "dtype", "norm_epsilon", "type_vocab_size",
      "embedding_size"}


def test_field_defaults_and_eval_time_fields():
  defaults = field_defaults()
  assert set(defaults) == {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
  assert ModelConfig(vocab_size=7, **defaults) == ModelConfig(vocab_size=7)
  assert (defaults["position"], defaults["scale"], defaults["rope_base"]) == ("rope", "logn",
                                                                             10000.0)
  assert defaults["t5_shared"] is True and defaults["alibi_slopes"] == "reference"
  # the fields evaluation could change before the declarations existed, and no others of
  # those that existed then (the rest change the parameters or what they mean)
  before = {"width", "num_layers", "num_heads", "mlp_dim", "dropout", "attention_dropout",
            "position", "max_len", "rope_base", "rope_layout", "sinusoidal_mode",
            "relative_clip", "t5_num_buckets", "t5_max_distance", "rope_scaling",
            "rope_scaling_factor", "rerope_window", "attention", "scale", "logn_n0",
            "logn_floor", "causal", "window", "performer_features", "performer_redraw",
            "nystrom_landmarks", "nystrom_iterations", "synthesizer_rank", "norm",
            "activation", "remat", "dtype"}
  assert eval_time_fields() & before == {"scale", "logn_n0", "logn_floor", "rope_scaling",
                                         "rope_scaling_factor", "rerope_window", "rope_base",
                                         "window"}


def test_every_field_is_in_both_config_model_sections():
  fields = set(field_defaults())
  for config in (mlm_extrapolation.get_config(), contrastive_batch.get_config()):
    assert set(config.model) == fields
  # the experiments' own values are kept (quickstart and the contrastive encoder)
  mlm, cb = mlm_extrapolation.get_config().model, contrastive_batch.get_config().model
  assert (mlm.width, mlm.num_layers, mlm.num_heads, mlm.mlp_dim, mlm.max_len, mlm.scale) == (
      128, 2, 2, 512, 4096, "logn")
  assert (cb.width, cb.num_layers, cb.num_heads, cb.mlp_dim, cb.scale) == (128, 2, 4, 512,
                                                                            "logn")
  # a field the contrastive config used to lack is overridable there now
  assert contrastive_batch.get_config().model.t5_shared is True


# ------------------------------------------------------------------------ checks refuse

_WRONG_TYPE = {bool: "yes", int: 2.5, float: "x", str: 3}


@pytest.mark.parametrize("field", [*CORE_FIELDS, *{f.name: f for f in _all_declared_fields()}
                                   .values()], ids=lambda f: f.name)
def test_each_check_refuses_a_bad_value_in_one_line(field):
  values = list(field.bad) + [_WRONG_TYPE[field.type]]
  for value in values:
    cfg = dataclasses.replace(_cfg(), **{field.name: value})
    with pytest.raises(ConfigError) as e:
      cfg.validate()
    message = str(e.value)
    assert "\n" not in message and f"model.{field.name}={value!r}" in message, message


def test_unknown_names_fail_listing_the_valid_ones():
  for get, reg in ((get_position, POSITIONS), (get_attention, ATTENTIONS), (get_scale, SCALES)):
    with pytest.raises(ConfigError, match="valid names") as e:
      get("bogus")
    assert all(name in str(e.value) for name in reg)


# ----------------------------------------------------------- unsupported combinations

@pytest.mark.parametrize("attention", [n for n, k in ATTENTIONS.items() if not k.probabilities])
def test_attention_dropout_refused_without_an_attention_matrix(attention):
  with pytest.raises(ConfigError) as e:
    ModelConfig.from_dict(dict(vocab_size=30, attention=attention, attention_dropout=0.1))
  able = [n for n, k in ATTENTIONS.items() if k.probabilities]
  assert str(e.value) == (f"attention={attention} has no attention matrix to drop out; set "
                          f"model.attention_dropout=0 or use attention={'|'.join(able)}")
  assert "softmax" in able and "synthesizer_dense" in able
  ModelConfig.from_dict(dict(vocab_size=30, attention=attention))  # without dropout: fine


def test_rope_factor_refused_where_nothing_reads_it():
  for scaling in ("none", "rerope"):
    with pytest.raises(ConfigError, match=f"not rope_scaling={scaling}"):
      ModelConfig.from_dict(dict(vocab_size=30, rope_scaling=scaling, rope_scaling_factor=4.0))
  for scaling in ("pi", "ntk"):
    ModelConfig.from_dict(dict(vocab_size=30, rope_scaling=scaling, rope_scaling_factor=4.0))
  with pytest.raises(ConfigError, match="position=rope only"):
    ModelConfig.from_dict(dict(vocab_size=30, position="alibi", rope_scaling="pi"))


def _layer_outputs(cfg, runs):
  """One attention layer's outputs, in training mode, for each (field overrides, dropout
  seed) of `runs`, all with the same parameters."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, cfg.width))
  mask, pos = padding_mask(jnp.ones((1, 8), bool)), jnp.arange(8)
  layers = [MultiHeadAttention(dataclasses.replace(cfg, **fields)) for fields, _ in runs]
  # random parameters of the layer's shapes: nothing to compile for an init
  shapes = jax.eval_shape(layers[0].init, jax.random.PRNGKey(1), x, mask, pos)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), jnp.float32), shapes)

  @jax.jit
  def run(params):
    return [layer.apply(params, x, mask, pos, deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(seed)})
            for layer, (_, seed) in zip(layers, runs)]
  return run(params)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_declared_probabilities_and_scale_are_what_the_kernel_does(attention):
  # built without validation: the point is what the kernel does with what it would refuse
  cfg = _cfg(attention=attention, position="none", attention_dropout=0.5)
  logn = dict(scale="logn", logn_n0=64)  # 8 keys, floored to 16: lambda != 1/sqrt(d)
  base, other_key, other_scale = _layer_outputs(
      cfg, [(dict(scale="standard"), 2), (dict(scale="standard"), 3), (logn, 2)])
  kernel = ATTENTIONS[attention]
  dropped = not np.allclose(base, other_key)
  assert dropped == kernel.probabilities, "attention dropout acts iff probabilities declared"
  scaled = not np.allclose(base, other_scale)
  assert scaled == kernel.uses_scale, "model.scale acts iff uses_scale declared"


# ----------------------------------------------------------- every (position, kernel) pair

def _pair_cfg(position, attention):
  return ModelConfig.from_dict(dict(vocab_size=30, width=16, num_heads=2, num_layers=1,
                                    mlp_dim=32, max_len=32, performer_features=8,
                                    nystrom_landmarks=4, relative_clip=4, position=position,
                                    attention=attention))


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_every_position_kernel_pair_runs_or_is_refused(attention):
  kernel = ATTENTIONS[attention]
  tokens = jax.ShapeDtypeStruct((2, 12), jnp.int32)
  valid = jax.ShapeDtypeStruct((2, 12), bool)
  for position in POSITIONS:
    missing = sorted(POSITIONS[position].terms(_cfg(position=position)) - kernel.honours)
    try:
      cfg = _pair_cfg(position, attention)
    except ConfigError as e:
      message = str(e)
      assert missing and f"attention={attention} cannot apply position={position}" in message
      assert all(term in message for term in missing), message
      assert re.search(r"use attention=\S*softmax", message), message  # a valid choice
      continue
    assert not missing, (position, attention)
    # traced, not compiled (tests/test_padding_properties.py runs each kernel and encoding):
    # a term returned but not declared would raise here
    model = Encoder(cfg)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, valid)
    out = jax.eval_shape(model.apply, params, tokens, valid)
    assert out.shape == (2, 12, 16)


def test_undeclared_term_is_refused_naming_the_variant(monkeypatch):
  # the case: an ALiBi clone that forgot to declare its bias was accepted by
  # attention=linear, which then dropped the bias without a word
  clone = PositionVariant(name="alibi_clone", doc="ALiBi without its terms declared",
                          terms=no_terms, max_length=unbounded,
                          relative=lambda cfg: Alibi(num_heads=cfg.num_heads))
  monkeypatch.setitem(POSITIONS._load(), "alibi_clone", clone)
  cfg = _pair_cfg("alibi_clone", "linear")  # nothing declared, so nothing to refuse here
  x = jnp.zeros((1, 6, 16))
  layer = MultiHeadAttention(cfg)
  with pytest.raises(DeclarationError, match=r"position=alibi_clone returned RelativeTerms "
                     r"fields \['bias'\]"):
    jax.eval_shape(layer.init, jax.random.PRNGKey(0), x, padding_mask(jnp.ones((1, 6), bool)),
                   jnp.arange(6))
  terms = Alibi(num_heads=2).apply({}, jnp.arange(4), jnp.arange(4))
  assert checked_terms(POSITIONS["alibi"], terms, cfg) is terms  # declared: passes


# --------------------------------------------------------------------------- discovery

def _package(root, name, files):
  pkg = root / name
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  for module, body in files.items():
    (pkg / f"{module}.py").write_text(textwrap.dedent(body))


_SCALE = """
from model.variants import ScaleVariant
{target} = {open}ScaleVariant(name="{name}", doc="d", factor=lambda n, d, cfg: n){close}
"""


def _scale_module(name, many=False):
  return _SCALE.format(target="VARIANTS" if many else "VARIANT", name=name,
                       open="[" if many else "", close="]" if many else "")


def test_registry_discovers_sorts_skips_helpers_and_refuses_duplicates(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(tmp_path))
  _package(tmp_path, "discovery_ok", {"zeta": _scale_module("alpha"),
                                      "alpha": _scale_module("zeta", many=True),
                                      "helper": "X = 1\n"})
  reg = Registry("discovery_ok", ScaleVariant, "scale")
  assert list(reg) == ["alpha", "zeta"]  # by variant name, the helper skipped
  with pytest.raises(ConfigError, match=r"unknown scale 'beta'; valid names: \['alpha', 'zeta'\]"):
    reg.lookup("beta")
  _package(tmp_path, "discovery_dup", {"one": _scale_module("same"),
                                       "two": _scale_module("same")})
  with pytest.raises(DeclarationError, match="'same' is declared twice: in discovery_dup.one "
                     "and discovery_dup.two"):
    list(Registry("discovery_dup", ScaleVariant, "scale"))
  _package(tmp_path, "discovery_kind", {"one": _scale_module("s")})
  with pytest.raises(DeclarationError, match="not a PositionVariant"):
    list(Registry("discovery_kind", PositionVariant, "position"))

"""The contrastive sentence-embedding task: pairs -> SentenceEncoder -> loss -> accumulation.

Training signals (config.data.signal):
- simcse: every sentence twice; the two dropout views are the positive pair.
- supervised: pairs (STS pairs with score >= data.min_score, or a pairs file) are positives.
- simbert: each pair as [CLS] a [SEP] b [SEP] and [CLS] b [SEP] a [SEP] under the UniLM mask;
  the [CLS] vectors of the two orderings are the positive pair (loss.pairing=all), plus the
  generation loss of the second sentence (loss.simbert_weight).

The encoder starts from scratch or from an MLM workdir of this codebase (config.init_from):
then the architecture and the tokenizer are the MLM run's (dropout is this config's) and the
resolved model is written to DIR/sentence_model.json so that evaluation needs only DIR.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from data import sts
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from model.config import ModelConfig
from model.sentence import SentenceEncoder, get_pooling
from objectives.accumulation import MODES, make_grad_fn, num_micro_batches
from objectives.contrastive import LossConfig, contrastive_loss
from objectives.mlm import mlm_loss
from utils.errors import ConfigError, UserError
from utils.files import atomic_write_json, read_json

SIGNALS = ("simcse", "supervised", "simbert")
TRAIN_FORMATS = ("sts", "pairs", "sentences")
MODEL_FILE = "sentence_model.json"


def sentence_model(config, model_cfg: ModelConfig) -> SentenceEncoder:
  s = config.sentence
  return SentenceEncoder(model_cfg, pooling=s.pooling, projection=s.projection,
                         lm_head=config.data.signal == "simbert")


def init_params(model: SentenceEncoder, key, length: int):
  tokens = np.zeros((1, length), np.int32)
  valid = tokens != PAD

  def every_part(m, t, v):  # touch the LM head too, so that init creates it
    return m.seq2seq(t, v, jnp.zeros_like(t)) if m.lm_head else m(t, v)

  return model.init({"params": key}, tokens, valid, method=every_part)["params"]


def restore_params(workdir: str, init_fn, train_cfg):
  """(step, params) of a workdir's newest checkpoint (training/checkpoint.py), or a user error."""
  from training.checkpoint import restore_params as restore
  restored = restore(workdir, init_fn, train_cfg)
  if restored is None:
    raise UserError(f"{workdir!r} has no checkpoint; train it first")
  return restored


# ---------------------------------------------------------------------------------------------
# Data

def training_pairs(config) -> sts.StsData:
  """The training examples as pairs (for simcse both sides are the same sentence)."""
  d = config.data
  if d.train == "synthetic":
    data = sts.synthetic_pairs(d.synthetic.num_train, d.synthetic.seed)
  elif d.train_format == "sts":
    data = sts.read_sts(d.train, d.train_split or None)
    if d.signal != "simcse":
      data = data.positives(d.min_score)
  elif d.train_format == "pairs":
    data = sts.read_pairs(d.train)
  else:  # sentences
    if d.signal != "simcse":
      raise ConfigError(f"data.train_format=sentences has no pairs: it needs data.signal=simcse,"
                        f" not {d.signal!r}")
    sentences = sts.read_sentences(d.train)
    return sts.StsData(sentences, sentences, np.full(len(sentences), np.nan))
  if d.signal == "simcse":
    sentences = data.sentences()
    return sts.StsData(sentences, sentences, np.full(len(sentences), np.nan))
  return data


def example_arrays(config, tokenizer, pairs: sts.StsData) -> dict:
  """{'tokens': [N, 2, n]} (and 'segments' for simbert): the two views of every example."""
  n = config.data.max_len
  if config.data.signal == "simbert":
    ab, seg_ab = sts.encode_seq2seq(tokenizer, pairs.s1, pairs.s2, n)
    ba, seg_ba = sts.encode_seq2seq(tokenizer, pairs.s2, pairs.s1, n)
    return {"tokens": np.stack([ab, ba], 1), "segments": np.stack([seg_ab, seg_ba], 1)}
  return {"tokens": np.stack([sts.encode_sentences(tokenizer, pairs.s1, n),
                              sts.encode_sentences(tokenizer, pairs.s2, n)], 1)}


def make_embed(model: SentenceEncoder, signal: str, simbert_weight: float = 1.0):
  """embed(params, batch, keys) -> (h [m, 2, D], aux) for objectives.accumulation.

  Each example (and each of its two views) is encoded on its own under vmap, with dropout key
  fold_in(keys[i], view): the masks of an example do not depend on which other examples share
  its (micro-)batch, which is what makes exact accumulation exact.
  """

  def view(params, tokens, segments, key):
    rngs = {"dropout": key}
    valid = (tokens != PAD)[None]
    if segments is None:
      return model.apply({"params": params}, tokens[None], valid, deterministic=False,
                         rngs=rngs)[0], None
    pooled, logits = model.apply({"params": params}, tokens[None], valid, segments[None],
                                 deterministic=False, rngs=rngs, method=SentenceEncoder.seq2seq)
    # the second sentence's tokens, each predicted from the position before it
    weights = (segments[1:] == 1) & valid[0, 1:]
    nll, _ = mlm_loss(logits[:, :-1], tokens[None, 1:], weights[None].astype(jnp.float32))
    return pooled[0], nll

  def example(params, tokens, segments, key):
    keys = jax.vmap(lambda v: jax.random.fold_in(key, v))(jnp.arange(2))
    return jax.vmap(view, in_axes=(None, 0, 0 if segments is not None else None, 0))(
        params, tokens, segments, keys)

  def embed(params, batch, keys):
    segments = batch.get("segments") if signal == "simbert" else None
    h, nll = jax.vmap(example, in_axes=(None, 0, 0 if segments is not None else None, 0))(
        params, batch["tokens"], segments, keys)
    if nll is None:
      return h, None
    # per example: the mean of its two orderings' generation losses; summed over examples
    return h, simbert_weight * jnp.sum(jnp.mean(nll, axis=1))

  return embed


# ---------------------------------------------------------------------------------------------
# Model, tokenizer and initial parameters

def _mlm_run(init_from: str):
  """(config, tokenizer, MlmModel) of an MLM workdir."""
  from model.encoder import MlmModel
  from training import mlm, workdir as wd
  cfg = wd.load_config(init_from)
  if cfg.get("task", "mlm") != "mlm":
    raise ConfigError(f"init_from={init_from!r} is a {cfg.task!r} run; it must be an MLM "
                      "workdir of train.py")
  tok = load_tokenizer(cfg.data.tokenizer, init_from)
  return cfg, tok, MlmModel(mlm.model_config(cfg, tok.vocab_size))


def prepare_model(config, workdir: str, pairs: sts.StsData):
  """(tokenizer, model config, pretrained params or None); writes both into the workdir."""
  saved = os.path.join(workdir, MODEL_FILE)
  checkpoints = os.path.join(workdir, "checkpoints")
  has_checkpoint = os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))
  if os.path.exists(saved) and has_checkpoint:  # resuming: the checkpoint holds the parameters
    spec = read_json(saved)
    return load_tokenizer(spec["tokenizer"], workdir), ModelConfig.from_dict(spec["model"]), None
  pretrained = None
  if config.init_from:
    from training import mlm
    mlm_cfg, tok, mlm_model = _mlm_run(config.init_from)
    model_cfg = dataclasses.replace(mlm_model.cfg, dropout=config.model.dropout,
                                    attention_dropout=config.model.attention_dropout)
    _, pretrained = restore_params(config.init_from, lambda: mlm.init_params(
        mlm_model, jax.random.PRNGKey(0), mlm_cfg.data.train_length), mlm_cfg.train)
  else:
    tok = build_tokenizer(config.data, pairs.sentences())
    model_cfg = ModelConfig.from_dict(dict(config.model.to_dict(), vocab_size=tok.vocab_size))
  tok.save(workdir)
  atomic_write_json(saved, {"model": dataclasses.asdict(model_cfg), "tokenizer": tok.kind})
  return tok, model_cfg, pretrained


def merge_pretrained(params, pretrained):
  """params with every top-level entry that `pretrained` also has (the encoder, and the LM
  head for simbert) replaced by the pretrained one; the projection stays freshly initialised."""
  if pretrained is None:
    return params
  out = dict(params)
  for name in params:
    if name in pretrained:
      shapes = jax.tree_util.tree_map(jnp.shape, (params[name], pretrained[name]))
      if jax.tree_util.tree_structure(params[name]) != jax.tree_util.tree_structure(
          pretrained[name]) or shapes[0] != shapes[1]:
        raise ConfigError(f"init_from: the pretrained {name!r} does not match this model's "
                          "shapes")
      out[name] = pretrained[name]
  return out


# ---------------------------------------------------------------------------------------------
# Train, evaluate

def check_config(config) -> None:
  """Everything that can be refused before data is read or anything compiled."""
  from training.optimizer import SCHEDULES
  d, t = config.data, config.train
  if d.signal not in SIGNALS:
    raise ConfigError(f"unknown data.signal {d.signal!r}; valid names: {list(SIGNALS)}")
  if d.train != "synthetic" and d.train_format not in TRAIN_FORMATS:
    raise ConfigError(f"unknown data.train_format {d.train_format!r}; valid names: "
                      f"{list(TRAIN_FORMATS)}")
  LossConfig.from_config(config.loss)
  get_pooling(config.sentence.pooling)
  if t.accumulation not in MODES:
    raise ConfigError(f"unknown train.accumulation {t.accumulation!r}; valid names: "
                      f"{list(MODES)}")
  if t.steps <= 0 or t.batch_size <= 0:
    raise ConfigError("train.steps and train.batch_size must be positive")
  if t.accumulation != "none":
    num_micro_batches(t.batch_size, t.micro_batch)
  if t.schedule not in SCHEDULES:
    raise ConfigError(f"unknown train.schedule {t.schedule!r}; valid names: {list(SCHEDULES)}")
  if t.on_nonfinite not in ("stop", "skip"):
    raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got {t.on_nonfinite!r}")
  min_len = 7 if d.signal == "simbert" else 3
  if d.max_len < min_len:
    raise ConfigError(f"data.max_len={d.max_len} leaves no room for a sentence (at least "
                      f"{min_len} for signal={d.signal})")
  if not config.init_from:
    bound = ModelConfig.from_dict(dict(config.model.to_dict(), vocab_size=8)).max_length()
    if bound is not None and d.max_len > bound:
      raise ConfigError(f"data.max_len={d.max_len} exceeds the model's length bound {bound}")
  elif not os.path.isdir(config.init_from):
    raise ConfigError(f"init_from={config.init_from!r} is not a directory; pass an MLM "
                      "workdir of train.py")


def train(config, workdir: str, *, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None):
  """Trains (or resumes) a sentence encoder in workdir; scores config.eval.sts at the end.

  Returns (FitResult, STS result or None).
  """
  from evaluation.sts import evaluate_sts_workdir
  from training import workdir as wd
  from training.loop import fit

  check_config(config)
  wd.prepare(workdir, config, overwrite=overwrite)
  pairs = training_pairs(config)
  tok, model_cfg, pretrained = prepare_model(config, workdir, pairs)
  model = sentence_model(config, model_cfg)
  batches = sts.ExampleBatches(example_arrays(config, tok, pairs), config.train.batch_size,
                               config.seed)
  loss_cfg = LossConfig.from_config(config.loss)
  grad_fn = make_grad_fn(config.train.accumulation,
                         make_embed(model, config.data.signal, config.loss.simbert_weight),
                         lambda h: contrastive_loss(h, loss_cfg), config.train.micro_batch)
  # jitted: initialising op by op costs seconds of dispatch on a CPU
  fresh = jax.jit(lambda key: init_params(model, key, config.data.max_len))
  length = config.data.max_len
  result = fit(config, workdir,
               init_params=lambda key: merge_pretrained(fresh(key), pretrained),
               loss_fn=None, grad_fn=grad_fn, batch_fn=batches.batch,
               tokens_per_step=config.train.batch_size * 2 * length,
               progress=progress, stop_after=stop_after)
  evals = None
  if config.eval.at_end and config.eval.sts and not result.interrupted:
    e = config.eval
    evals = evaluate_sts_workdir(
        workdir, e.sts, split=e.split, whitening_k=e.whitening_k if e.whitening else None,
        params=result.state.params, step=result.step,
        loaded=(config, model, tok, None, None))
  return result, evals


def load_run(workdir: str, with_params: bool = True):
  """(config, model, tokenizer, params or None, step or None) of a contrastive workdir."""
  from training import workdir as wd
  config = wd.load_config(workdir)
  path = os.path.join(workdir, MODEL_FILE)
  if config.get("task") != "contrastive" or not os.path.exists(path):
    raise UserError(f"{workdir!r} is not a workdir of the contrastive task (no {MODEL_FILE})")
  saved = read_json(path)
  tok = load_tokenizer(saved["tokenizer"], workdir)
  model = sentence_model(config, ModelConfig.from_dict(saved["model"]))
  if not with_params:
    return config, model, tok, None, None
  step, params = restore_params(workdir, lambda: init_params(
      model, jax.random.PRNGKey(0), config.data.max_len), config.train)
  return config, model, tok, params, step


def train_main(config, workdir: str, **kwargs) -> int:
  """train.py for the contrastive task: train, then print the STS Spearman of this run."""
  result, evals = train(config, workdir, **kwargs)
  if evals is not None:
    print(f"STS Spearman x100 on {evals['name']} ({evals['pairs']} pairs), step "
          f"{evals['step']}: {100 * evals['spearman']:.2f}")
  return 0

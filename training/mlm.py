"""The MLM task: corpus -> tokenizer -> packed streams -> model -> loss; used by train and eval."""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from data.corpus import load_documents, split_documents
from data.mlm import TrainBatches, mlm_mask, pack
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from model.config import ModelConfig
from model.encoder import MlmModel
from objectives.mlm import mlm_loss
from utils.errors import ConfigError


@dataclasses.dataclass
class MlmData:
  tokenizer: object
  train_stream: np.ndarray
  valid_stream: np.ndarray
  num_train_docs: int
  num_valid_docs: int


def prepare_data(config, workdir: str | None = None) -> MlmData:
  """Reads and splits the corpus; the tokenizer is trained once and then loaded from workdir."""
  d = config.data
  docs = load_documents(d)
  train_docs, valid_docs = split_documents(docs, d.valid_fraction, config.seed)
  saved = workdir and any(os.path.exists(os.path.join(workdir, f))
                          for f in ("vocab.txt", "tokenizer.json"))
  if saved:
    tok = load_tokenizer(d.tokenizer, workdir)
  else:
    tok = build_tokenizer(d, train_docs)
    if workdir:
      tok.save(workdir)
  return MlmData(tok, pack([tok.encode(x) for x in train_docs]),
                 pack([tok.encode(x) for x in valid_docs]), len(train_docs), len(valid_docs))


def model_config(config, vocab_size: int) -> ModelConfig:
  return ModelConfig.from_dict(dict(config.model.to_dict(), vocab_size=vocab_size))


def init_params(model: MlmModel, key, length: int):
  tokens = np.zeros((1, length), np.int32)
  return model.init({"params": key}, tokens, tokens != PAD)["params"]


def mlm_loss_fn(model: MlmModel, mask_rate: float):
  """loss(params, tokens, key): masks with one key, drops out with another."""

  def loss(params, tokens, key):
    k_mask, k_drop = jax.random.split(key)
    inputs, positions, targets, weights = mlm_mask(k_mask, tokens, vocab_size=model.cfg.vocab_size,
                                                   rate=mask_rate)
    logits = model.apply({"params": params}, inputs, tokens != PAD, deterministic=False,
                         targets_at=positions, rngs={"dropout": k_drop})
    value, sums = mlm_loss(logits, targets, weights)
    return value, {"accuracy": sums["correct"] / sums["count"]}

  return loss


def train_batches(config, data: MlmData) -> TrainBatches:
  return TrainBatches(data.train_stream, config.data.train_length, config.train.batch_size,
                      config.seed)


def train(config, workdir: str, *, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None):
  """Trains (or resumes) an MLM in workdir; evaluates by length at the end if configured.

  Returns (FitResult, eval results or None).
  """
  from evaluation.mlm_by_length import evaluate_workdir
  from training import workdir as wd
  from training.loop import fit

  # everything that can be refused is refused before the corpus is read or anything compiled
  check_config(config)
  wd.prepare(workdir, config, overwrite=overwrite)
  data = prepare_data(config, workdir)
  model = MlmModel(model_config(config, data.tokenizer.vocab_size))
  batches = train_batches(config, data)
  result = fit(config, workdir,
               init_params=lambda key: init_params(model, key, config.data.train_length),
               loss_fn=lambda p, tokens, key: mlm_loss_fn(model, config.data.mask_rate)(
                   p, tokens, key),
               batch_fn=batches.batch,
               tokens_per_step=config.train.batch_size * config.data.train_length,
               progress=progress, stop_after=stop_after)
  evals = None
  if config.eval.at_end and not result.interrupted:
    evals = evaluate_workdir(workdir, config=config, data=data, params=result.state.params,
                             step=result.step)
  return result, evals


def check_config(config) -> None:
  """Consistency checks that need no data: refused with what is wrong and what to do."""
  from training.optimizer import SCHEDULES
  mc = model_config(config, vocab_size=8)  # validates names and shapes of the model section
  bound = mc.max_length()
  too_long = [n for n in config.eval.lengths if bound is not None and n > bound]
  if too_long:
    raise ConfigError(
        f"eval.lengths {too_long} exceed what position={mc.position} / attention="
        f"{mc.attention} can encode (at most {bound}); drop them from eval.lengths or raise "
        "model.max_len")
  if bound is not None and config.data.train_length > bound:
    raise ConfigError(f"data.train_length={config.data.train_length} exceeds the model's "
                     f"length bound {bound}; raise model.max_len")
  t = config.train
  if t.steps <= 0 or t.batch_size <= 0:
    raise ConfigError("train.steps and train.batch_size must be positive")
  if t.schedule not in SCHEDULES:
    raise ConfigError(f"unknown train.schedule {t.schedule!r}; valid names: {list(SCHEDULES)}")
  if t.on_nonfinite not in ("stop", "skip"):
    raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got {t.on_nonfinite!r}")
  if not 0.0 < config.data.mask_rate < 1.0:
    raise ConfigError(f"data.mask_rate must be in (0, 1), got {config.data.mask_rate}")


def train_main(config, workdir: str, **kwargs) -> int:
  """train.py for the MLM task: train, then print the length table of this run."""
  from evaluation.tables import length_table
  _, evals = train(config, workdir, **kwargs)
  if evals is not None:
    print(f"MLM accuracy (%) by evaluation length, step {evals['step']}:")
    print(length_table([(workdir, evals["lengths"])]))
  return 0

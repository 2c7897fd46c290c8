"""The mlm task: corpus -> tokenizer -> packed streams -> model -> loss; accuracy by length.

Training ends with the run's evaluation by length (eval.json); evaluate.py scores a workdir
the same way (optionally with model fields changed, --model_override: eval_<tag>.json) or
measures its attention entropy by length (entropy.json). A saved evaluation is reused while
it is for the latest checkpoint and covers the lengths asked for.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import jax
import numpy as np

from configs.variants import _typed
from data.corpus import load_documents, split_documents
from data.mlm import TrainBatches, mlm_mask, pack
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from evaluation.entropy import entropy_by_length
from evaluation.mlm_by_length import evaluate_lengths, split_lengths
from evaluation.tables import length_table
from model.config import ModelConfig, eval_time_fields, field_defaults
from model.encoder import MlmModel
from objectives.mlm import mlm_loss
from training import workdir as wd
from training.checkpoint import latest_step, restore_params
from training.loop import fit
from training.optimizer import SCHEDULES
from training.tasks import ModuleTask
from utils.errors import ConfigError, UserError
from utils.files import atomic_write_json, read_json


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


def check_config(config) -> None:
  """Consistency checks that need no data: refused with what is wrong and what to do."""
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


# ---------------------------------------------------------------------------------------------
# Train

def train(config, workdir: str, *, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> wd.TrainResult:
  """Trains (or resumes) an MLM in workdir; evaluates by length at the end if configured."""
  # everything that can be refused is refused before the corpus is read or anything compiled
  check_config(config)
  changes = wd.prepare(workdir, config, overwrite=overwrite)
  data = prepare_data(config, workdir)
  model = MlmModel(model_config(config, data.tokenizer.vocab_size))
  batches = train_batches(config, data)
  result = fit(config, workdir,
               init_params=lambda key: init_params(model, key, config.data.train_length),
               loss_fn=lambda p, tokens, key: mlm_loss_fn(model, config.data.mask_rate)(
                   p, tokens, key),
               batch_fn=batches.batch,
               tokens_per_step=config.train.batch_size * config.data.train_length,
               progress=progress, stop_after=stop_after, changes=changes)
  evals = None
  if config.eval.at_end and not result.interrupted:
    run = wd.LoadedRun(config, model, data.tokenizer, result.state.params, result.step, data)
    evals = score_lengths(workdir, run)
  return wd.TrainResult(workdir, result, evals)


def report(result: wd.TrainResult) -> str:
  """train.py's output: the length table of this run."""
  if result.evaluation is None:
    return ""
  return (f"MLM accuracy (%) by evaluation length, step {result.evaluation['step']}:\n" +
          length_table([(result.workdir, result.evaluation["lengths"])]))


# ---------------------------------------------------------------------------------------------
# Load and evaluate a workdir

def load(workdir: str, with_params: bool = True, config=None) -> wd.LoadedRun:
  """A workdir's run: config (or the given one), model, tokenizer and, with_params, the
  newest checkpoint's parameters and step, and the data (the validation stream)."""
  config = config or wd.load_config(workdir)
  data = prepare_data(config, workdir) if with_params else None
  tokenizer = data.tokenizer if data else load_tokenizer(config.data.tokenizer, workdir)
  model = MlmModel(model_config(config, tokenizer.vocab_size))
  if not with_params:
    return wd.LoadedRun(config, model, tokenizer, None, None)
  restored = restore_params(
      workdir, lambda: init_params(model, jax.random.PRNGKey(0), config.data.train_length),
      config.train)
  if restored is None:
    raise UserError(f"{workdir!r} has no checkpoint to evaluate; train first")
  step, params = restored
  return wd.LoadedRun(config, model, tokenizer, params, step, data)


def usable_lengths(workdir: str, model, lengths):
  """(usable, refused): lengths a length-bound model cannot encode are named in one line."""
  bound = model.cfg.max_length()
  usable, refused = split_lengths([int(n) for n in lengths], bound)
  if refused:
    print(f"{workdir}: position={model.cfg.position}, attention={model.cfg.attention} cannot "
          f"encode lengths {refused} (at most {bound}); reporting {usable}", file=sys.stderr)
  return usable, refused


def _by_length(workdir: str, run: wd.LoadedRun, lengths, out: str, score) -> dict:
  """score(usable lengths) -> {n: result}, saved to out as {'step', 'lengths', 'refused'}."""
  usable, refused = usable_lengths(workdir, run.model, lengths or run.config.eval.lengths)
  result = {"step": int(run.step) if run.step is not None else None,
            "lengths": {str(n): v for n, v in score(usable).items()}, "refused": refused}
  atomic_write_json(out, result)
  return result


def score_lengths(workdir: str, run: wd.LoadedRun, lengths=None, out: str | None = None) -> dict:
  """MLM accuracy and loss of a loaded run at each length; saved to out (eval.json)."""
  e = run.config.eval
  return _by_length(workdir, run, lengths, out or os.path.join(workdir, "eval.json"),
                    lambda usable: evaluate_lengths(
                        run.model, run.params, run.data.valid_stream, usable,
                        vocab_size=run.tokenizer.vocab_size, mask_rate=run.config.data.mask_rate,
                        max_tokens=e.max_tokens, batch_tokens=e.batch_tokens, seed=e.seed))


def apply_overrides(config, overrides):
  """['rope_scaling=ntk', ...] -> a copy of config with those model fields replaced (only
  fields that the variants declare may change at evaluation time)."""
  config = config.copy_and_resolve_references()
  allowed, defaults = sorted(eval_time_fields()), field_defaults()
  for item in overrides:
    key, sep, value = item.partition("=")
    key = key.strip().removeprefix("model.")
    if not sep or key not in allowed:
      raise UserError(f"--model_override {item!r}: expected KEY=VALUE with KEY one of "
                      f"{list(allowed)} (fields that do not change the parameters)")
    old = config.model[key] if key in config.model else defaults[key]  # older workdirs
    with config.unlocked():
      config.model[key] = _typed(old, value.strip(), key)
  return config


def _override_tag(overrides) -> str:
  return "_".join(o.replace("model.", "").replace("=", "-") for o in overrides)


def _result_path(workdir: str, kind: str, overrides) -> str:
  tag = _override_tag(overrides)
  return os.path.join(workdir, f"{kind}_{tag}.json" if tag else f"{kind}.json")


def _saved(path: str, step, lengths) -> dict | None:
  """The saved evaluation at path if it is for this step and covers these lengths."""
  if not os.path.exists(path):
    return None
  res = read_json(path)
  have = {int(n) for n in res["lengths"]} | set(res.get("refused", []))
  if res.get("step") != step or not {int(n) for n in lengths} <= have:
    return None
  return dict(res, lengths={n: v for n, v in res["lengths"].items() if int(n) in
                            {int(m) for m in lengths}})


def _workdir_config(workdir: str, overrides=()):
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  return apply_overrides(wd.load_config(workdir), overrides)


def scores(workdir: str, lengths=None, overrides=()) -> dict:
  """MLM accuracy by length of a workdir's latest checkpoint: the saved one if up to date."""
  config = _workdir_config(workdir, overrides)
  path = _result_path(workdir, "eval", overrides)
  wanted = [int(n) for n in (lengths or config.eval.lengths)]
  saved = _saved(path, latest_step(workdir), wanted)
  if saved is not None:
    return saved
  return score_lengths(workdir, load(workdir, config=config), wanted, out=path)


def entropies(workdir: str, lengths=None, overrides=()) -> dict:
  """Mean attention entropy by length of a workdir's latest checkpoint (entropy.json)."""
  run = load(workdir, config=_workdir_config(workdir, overrides))
  e = run.config.eval
  return _by_length(workdir, run, lengths, _result_path(workdir, "entropy", overrides),
                    lambda usable: entropy_by_length(
                        run.model, run.params, run.data.valid_stream, usable,
                        max_tokens=e.max_tokens, batch_tokens=e.batch_tokens))


def evaluate(workdir: str, *, lengths=None, metric: str = "accuracy", entropy: bool = False,
             model_override=()) -> dict:
  """evaluate.py --workdir: accuracy by length (or attention entropy, entropy=True)."""
  del metric  # an option of the table; one run's result holds both accuracy and loss
  if entropy:
    return entropies(workdir, lengths, model_override)
  return scores(workdir, lengths, model_override)


def describe(workdir: str, evaluation: dict) -> str:
  del workdir
  return json.dumps(evaluation["lengths"], indent=2)


def finished(workdir: str, config=None) -> bool:
  """config's run is in workdir, at config.train.steps, with its end-of-run eval.json."""
  if not wd.reached(workdir, config):
    return False
  config = config or wd.load_config(workdir)
  if not config.eval.at_end:
    return True
  return _saved(os.path.join(workdir, "eval.json"), config.train.steps,
                config.eval.lengths) is not None


def run_label(workdir: str) -> str:
  """'name (position, scale)' from the run's config."""
  try:
    m = wd.load_config(workdir).model
    return f"{os.path.basename(os.path.normpath(workdir))} ({m.position}, {m.scale})"
  except (UserError, KeyError, AttributeError):
    return workdir


def table(workdirs, *, lengths=None, metric: str = "accuracy", entropy: bool = False,
          model_override=()) -> str:
  """One row per run: MLM accuracy (or loss) by length, or the mean attention entropy."""
  suffix = f" [{', '.join(model_override)}]" if model_override else ""
  if entropy:
    rows = [(run_label(d) + suffix, entropies(d, lengths, model_override)["lengths"])
            for d in workdirs]
    every = sorted({int(n) for _, r in rows for n in r})
    rows.append(("log n (uniform attention)", {n: {"entropy": math.log(n)} for n in every}))
    return ("Mean attention entropy (nats) by evaluation length:\n" +
            length_table(rows, metric="entropy", percent=False, digits=3))
  rows = [(run_label(d) + suffix, scores(d, lengths, model_override)["lengths"])
          for d in workdirs]
  title = "MLM accuracy (%)" if metric == "accuracy" else "MLM loss"
  return f"{title} by evaluation length:\n" + length_table(rows, metric=metric,
                                                            percent=metric == "accuracy")


TASK = ModuleTask.of(__name__, name="mlm",
                     eval_options=("lengths", "metric", "entropy", "model_override"))

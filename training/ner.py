"""The NER task: sentences -> Encoder + GlobalPointer head -> multi-label span loss -> entity F1.

Data (config.data): `synthetic` (data/ner.py's nested-entity set) or a training and a
validation file in `format` bio or cluener. Entity types are those of the training set,
sorted; the model, the types and the tokenizer (char-level: labels are per character) are
written to DIR/ner_model.json and DIR/vocab.txt, so evaluation needs only the workdir. The end
of training scores entity precision / recall / F1 on the validation set (DIR/ner_eval.json).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from data import ner
from data.sts import ExampleBatches
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from evaluation.ner import score_ner
from evaluation.tables import seed_table
from model.config import ModelConfig
from model.globalpointer import NerModel, check_head
from objectives.globalpointer import globalpointer_loss, span_labels
from training import mlm
from training import workdir as wd
from training.checkpoint import latest_step, restore_params
from training.loop import fit
from training.optimizer import check_train_section
from training.tasks import ModuleTask
from utils.errors import ConfigError, UserError
from utils.files import atomic_write_json, read_json

MODEL_FILE = "ner_model.json"
EVAL_FILE = "ner_eval.json"


def check_config(config) -> None:
  """Everything that can be refused before data is read or anything compiled."""
  d = config.data
  check_head(config.ner.head, config.ner.head_size)
  if d.format not in ner.FORMATS:
    raise ConfigError(f"unknown data.format {d.format!r}; valid names: {list(ner.FORMATS)}")
  if (d.train == "synthetic") != (d.valid == "synthetic"):
    raise ConfigError("data.train and data.valid are both `synthetic` or both files (a "
                      f"training and a validation file), got train={d.train!r}, "
                      f"valid={d.valid!r}")
  if d.tokenizer != "char":
    raise ConfigError(f"data.tokenizer={d.tokenizer!r}: NER labels are character offsets, so "
                      "the tokenizer must be char")
  check_train_section(config.train)
  if d.max_len < 3:
    raise ConfigError(f"data.max_len={d.max_len} leaves no room for a character ([CLS] and "
                      "[SEP] take two tokens)")
  bound = ModelConfig.from_dict(dict(config.model.to_dict(), vocab_size=8)).max_length()
  if bound is not None and d.max_len > bound:
    raise ConfigError(f"data.max_len={d.max_len} exceeds the model's length bound {bound}")


def sentences(config, split: str) -> list[ner.Sentence]:
  """The training ('train') or validation ('valid') sentences of a config."""
  d = config.data
  if d.train == "synthetic":
    s = d.synthetic
    return ner.synthetic_sentences(s.num_train if split == "train" else s.num_valid,
                                   s.seed if split == "train" else s.seed + 1)
  return ner.read_ner(d[split], d.format)


def ner_model(config, model_cfg: ModelConfig, types) -> NerModel:
  return NerModel(model_cfg, len(types), head=config.ner.head, head_size=config.ner.head_size)


def init_params(model: NerModel, key, length: int):
  tokens = np.zeros((1, length), np.int32)
  return model.init({"params": key}, tokens, tokens != PAD, ner.spannable(tokens))["params"]


def loss_fn(model: NerModel, length: int):
  """loss(params, batch, key): the span loss of a batch {'tokens', 'spans'}, with dropout."""

  def loss(params, batch, key):
    tokens = batch["tokens"]
    scores = model.apply({"params": params}, tokens, tokens != PAD, ner.spannable(tokens),
                         deterministic=False, rngs={"dropout": key})
    return globalpointer_loss(scores, span_labels(batch["spans"], model.num_types, length)), {}

  return loss


def prepare_model(config, workdir: str, train_sentences):
  """(tokenizer, model config, types): the saved ones when resuming, else built from the
  training set and written into the workdir."""
  path = os.path.join(workdir, MODEL_FILE)
  if os.path.exists(path) and latest_step(workdir) is not None:
    saved = read_json(path)
    return (load_tokenizer(saved["tokenizer"], workdir), ModelConfig.from_dict(saved["model"]),
            saved["types"])
  types = ner.entity_types(train_sentences)
  if not types:
    raise UserError(f"{config.data.train}: no entities in the training set")
  tok = build_tokenizer(config.data, [s.text for s in train_sentences])
  model_cfg = ModelConfig.for_run(config.model.to_dict(), vocab_size=tok.vocab_size,
                                  train_length=config.data.max_len)
  tok.save(workdir)
  atomic_write_json(path, {"model": dataclasses.asdict(model_cfg), "tokenizer": tok.kind,
                           "types": types})
  return tok, model_cfg, types


def train(config, workdir: str, *, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> wd.TrainResult:
  """Trains (or resumes) a GlobalPointer model in workdir; scores the validation set at the end."""
  check_config(config)
  # both files are read before the workdir is touched: a bad file leaves nothing behind
  train_sentences, valid_sentences = sentences(config, "train"), sentences(config, "valid")
  changes = wd.prepare(workdir, config, overwrite=overwrite)
  tok, model_cfg, types = prepare_model(config, workdir, train_sentences)
  model = ner_model(config, model_cfg, types)
  length = config.data.max_len
  batches = ExampleBatches(ner.encode(train_sentences, tok, types, length),
                           config.train.batch_size, config.seed)
  fresh = jax.jit(lambda key: init_params(model, key, length))
  result = fit(config, workdir, init_params=fresh, loss_fn=loss_fn(model, length),
               batch_fn=batches.batch, tokens_per_step=config.train.batch_size * length,
               progress=progress, stop_after=stop_after, changes=changes)
  evals = None
  if config.eval.at_end and not result.interrupted:
    run = wd.LoadedRun(config, model, tok, result.state.params, result.step,
                       dict(types=types, valid=valid_sentences))
    evals = score(workdir, run)
  return wd.TrainResult(workdir, result, evals)


def _line(evaluation: dict) -> str:
  e = evaluation
  return (f"entity F1 x100 on {e['valid']} ({e['sentences']} sentences, {e['gold']} entities), "
          f"step {e['step']}: {100 * e['f1']:.2f} (precision {100 * e['precision']:.2f}, "
          f"recall {100 * e['recall']:.2f})")


def report(result: wd.TrainResult) -> str:
  """train.py's output: the validation F1 of this run."""
  return "" if result.evaluation is None else _line(result.evaluation)


# ---------------------------------------------------------------------------------------------
# Load and evaluate a workdir

def load(workdir: str, with_params: bool = True) -> wd.LoadedRun:
  """A NER workdir's config, model, tokenizer, (with_params) newest checkpoint, and as data
  its entity types."""
  config = wd.load_config(workdir)
  path = os.path.join(workdir, MODEL_FILE)
  if config.get("task") != "ner" or not os.path.exists(path):
    raise UserError(f"{workdir!r} is not a workdir of the ner task (no {MODEL_FILE})")
  saved = read_json(path)
  model = ner_model(config, ModelConfig.from_dict(saved["model"]), saved["types"])
  tok = load_tokenizer(saved["tokenizer"], workdir)
  data = dict(types=saved["types"])
  if not with_params:
    return wd.LoadedRun(config, model, tok, None, None, data)
  restored = restore_params(workdir, lambda: init_params(
      model, jax.random.PRNGKey(0), config.data.max_len), config.train)
  if restored is None:
    raise UserError(f"{workdir!r} has no checkpoint; train it first")
  return wd.LoadedRun(config, model, tok, restored[1], restored[0], data)


def score(workdir: str, run: wd.LoadedRun) -> dict:
  """Entity P / R / F1 of a loaded run on its validation set, saved in DIR/ner_eval.json."""
  config = run.config
  valid = run.data.get("valid") or sentences(config, "valid")
  types = run.data["types"]
  tokens = ner.encode(valid, run.tokenizer, types, config.data.max_len)["tokens"]
  result = dict(score_ner(run.model, run.params, valid, tokens, types, config.eval.batch_size),
                step=None if run.step is None else int(run.step), sentences=len(valid),
                valid=os.path.basename(config.data.valid))
  atomic_write_json(os.path.join(workdir, EVAL_FILE), result)
  return result


def evaluate(workdir: str, *, plot=None, title=None) -> dict:
  """evaluate.py --workdir: entity F1 of the latest checkpoint on the run's validation set
  (the saved result when it is for that checkpoint)."""
  del plot, title  # options of the table
  return wd.latest_result(workdir, EVAL_FILE, lambda: score(workdir, load(workdir)))


def describe(workdir: str, evaluation: dict) -> str:
  return f"{workdir}: {_line(evaluation)}"


def finished(workdir: str, config=None) -> bool:
  """config's run is in workdir, at config.train.steps, with its end-of-run evaluation."""
  return wd.finished_with(workdir, config, EVAL_FILE)


COLUMNS = {"precision": "P", "recall": "R", "f1": "F1"}  # (seed_table sorts them: F1, P, R)


def table(workdirs, *, plot=None, title=None) -> str:
  """Entity precision, recall and F1 x100 (mean ± std over seeds), one row per group of runs
  that differ only in the seed, labelled by the config values in which the rows differ."""
  del title
  if plot:
    raise UserError("the ner table has no plot; drop --plot")
  runs = [mlm.TableRun(d, os.path.basename(os.path.normpath(d)),
                       wd.config_to_dict(wd.load_config(d)), evaluate(d)) for d in workdirs]
  groups = mlm.seed_groups(runs)
  labels = (mlm.group_labels(groups) if len(groups) > 1 else
            [f"head={groups[0][0].config['ner']['head']}"])
  cells = {(label, short): [100 * r.results[metric] for r in group]
           for label, group in zip(labels, groups) for metric, short in COLUMNS.items()}
  names = sorted({r.results["valid"] for r in runs})
  return (f"Entity scores x100 on {', '.join(names)}, mean ± std over seeds "
          "(P precision, R recall):\n" + seed_table(cells, ["run"], digits=2))


TASK = ModuleTask.of(__name__, name="ner", eval_options=())

"""The PET task: few-shot (and zero-shot) classification as masked-LM prediction.

A pattern turns a text into an MLM input with [MASK] slots ("[MASK]满意。{text}"), a
verbalizer gives each label a word of as many tokens as there are slots (很 / 不), and the
predicted label is the one whose word the MLM finds likeliest at the slots
(objectives/pet.py). The model is the MLM itself (model.encoder.MlmModel): no new head.

- Zero-shot: train.steps=0 scores the MLM of init_from untouched (the workdir holds it as its
  step-0 checkpoint).
- Few-shot: pet.shots examples of each label, drawn from the training set with the run's
  seed, fine-tune the whole MLM with the loss at the slots (pet.loss), optionally plus the
  ordinary MLM loss on unlabelled text (data.unlabeled, weighted by pet.unlabeled_weight).

The MLM comes from init_from (an MLM workdir of train.py, or one convert.py imported): its
architecture and tokenizer, this config's dropout; without init_from a fresh model of
config.model with a char tokenizer of the training texts. The model, tokenizer and
verbalizer tokens are written to DIR/pet_model.json (and the tokenizer's file), so evaluation
needs only the workdir. The end of training scores accuracy on the evaluation set
(DIR/pet_eval.json).
"""
from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from data import pet, sentiment
from data.sts import ExampleBatches, encode_sentences
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from evaluation.pet import accuracy, predict_scores
from evaluation.tables import seed_table
from model.config import ModelConfig
from model.encoder import MlmModel
from objectives.pet import LOSSES, pet_loss
from training import mlm
from training import workdir as wd
from training.checkpoint import latest_step, restore_params
from training.loop import fit
from training.optimizer import check_train_section
from training.tasks import ModuleTask
from utils.errors import ConfigError, UserError
from utils.files import atomic_write_json, read_json

MODEL_FILE = "pet_model.json"
EVAL_FILE = "pet_eval.json"


def check_config(config) -> None:
  """Everything that can be refused before data is read or anything compiled."""
  d, p, t = config.data, config.pet, config.train
  if p.loss not in LOSSES:
    raise ConfigError(f"unknown pet.loss {p.loss!r}; valid names: {list(LOSSES)}")
  pet.pattern_pieces(p.pattern)
  if len(p.labels) != len(p.words) or len(p.labels) < 2:
    raise ConfigError(f"pet.labels {list(p.labels)} and pet.words {list(p.words)} must be lists "
                      "of the same length, at least two: one verbalizer word per label")
  if d.format not in pet.FORMATS:
    raise ConfigError(f"unknown data.format {d.format!r}; valid names: {list(pet.FORMATS)}")
  check_train_section(t, min_steps=0)  # steps=0: zero-shot, the MLM untouched
  if not d.valid:
    raise ConfigError("data.valid is empty: name the evaluation file (or synthetic)")
  if t.steps > 0 and not d.train:
    raise ConfigError("data.train is empty: few-shot training (train.steps > 0) needs a "
                      "training file (or synthetic); train.steps=0 scores zero-shot")
  synthetic = {k: d[k] == "synthetic" for k in ("train", "valid", "unlabeled")}
  if synthetic["unlabeled"] and not synthetic["valid"] or d.train and (
      synthetic["train"] != synthetic["valid"]):
    raise ConfigError("data.train, data.valid and data.unlabeled are all `synthetic` or all "
                      f"files, got train={d.train!r}, valid={d.valid!r}, "
                      f"unlabeled={d.unlabeled!r}")
  if p.shots < 0:
    raise ConfigError(f"pet.shots must be at least 0 (0: every training example), got {p.shots}")
  if d.unlabeled and (p.unlabeled_weight <= 0 or p.unlabeled_batch <= 0):
    raise ConfigError("data.unlabeled needs pet.unlabeled_weight and pet.unlabeled_batch "
                      f"positive, got {p.unlabeled_weight} and {p.unlabeled_batch}")
  if not 0.0 < d.mask_rate < 1.0:
    raise ConfigError(f"data.mask_rate must be in (0, 1), got {d.mask_rate}")
  if config.init_from:
    if not os.path.isdir(config.init_from):
      raise ConfigError(f"init_from={config.init_from!r} is not a directory; pass an MLM "
                        "workdir of train.py (or of convert.py)")
  else:
    bound = ModelConfig.from_dict(dict(config.model.to_dict(), vocab_size=8)).max_length()
    if bound is not None and d.max_len > bound:
      raise ConfigError(f"data.max_len={d.max_len} exceeds the model's length bound {bound}")


# ---------------------------------------------------------------------------------------------
# Data

def examples(config, split: str) -> list[sentiment.Example]:
  """The 'train' or 'valid' examples of a config (labels checked against pet.labels), or the
  'unlabeled' texts ([] when there are none)."""
  d = config.data
  source = d[split]
  if not source:
    return []
  if source == "synthetic":
    s = d.synthetic
    if split == "unlabeled":
      return [dataclasses.replace(e, label=None) for e in
              sentiment.synthetic_examples(s.num_unlabeled, s.seed + 2)]
    return sentiment.synthetic_examples(s.num_train if split == "train" else s.num_valid,
                                        s.seed if split == "train" else s.seed + 1)
  out = pet.read_examples(source, d.format, labeled=split != "unlabeled")
  if split != "unlabeled":
    pet.check_labels(out, config.pet.labels, source)
  return out


@dataclasses.dataclass
class PetData:
  train: list  # the sampled shots (every example with pet.shots=0)
  valid: list
  unlabeled: list
  texts: list  # every training and unlabelled text: a fresh tokenizer's vocabulary


def read_data(config) -> PetData:
  """Every file of the run, read and checked (before anything is written)."""
  train = examples(config, "train")
  shots = pet.sample_shots(train, config.pet.labels, config.pet.shots, config.seed,
                           config.data.train) if config.train.steps > 0 else []
  unlabeled = examples(config, "unlabeled")
  return PetData(shots, examples(config, "valid"), unlabeled,
                 [e.text for e in train + unlabeled])


def label_indices(config, exs) -> np.ndarray:
  return np.asarray([list(config.pet.labels).index(e.label) for e in exs], np.int32)


def train_arrays(config, tokenizer, data: PetData) -> dict:
  tokens, slots = pet.encode(tokenizer, [e.text for e in data.train], config.pet.pattern,
                             config.data.max_len)
  return {"tokens": tokens, "slots": slots, "labels": label_indices(config, data.train)}


# ---------------------------------------------------------------------------------------------
# Model

def _pretrained(init_from: str):
  """(tokenizer, model config, params) of an MLM workdir (anything else refused)."""
  cfg = wd.load_config(init_from)
  if cfg.get("task", "mlm") != "mlm":
    raise ConfigError(f"init_from={init_from!r} is a {cfg.task!r} run; it must be an MLM "
                      "workdir of train.py (or of convert.py)")
  run = mlm.load(init_from, with_params=False)
  restored = restore_params(init_from, lambda: mlm.init_params(
      run.model, jax.random.PRNGKey(0), cfg.data.train_length), cfg.train)
  if restored is None:
    raise ConfigError(f"init_from={init_from!r} has no checkpoint; train it first")
  return run.tokenizer, run.model.cfg, restored[1]


@dataclasses.dataclass
class ModelSpec:
  """What a run's model is: tokenizer, model config, verbalizer tokens [C, S], and the
  parameters to start from (None: fresh, or the checkpoint of a resumed run)."""
  tokenizer: object
  model: ModelConfig
  verbalizer: np.ndarray
  pretrained: object = None
  saved: bool = False  # read from the workdir (a resumed run)


def model_spec(config, workdir: str, data: PetData, overwrite: bool = False) -> ModelSpec:
  """The saved spec when resuming, else one from init_from (or fresh), checked: the
  verbalizer's words against the slots and the vocabulary, the pattern against max_len.
  Reads, writes nothing (save_spec writes it once the workdir is prepared)."""
  path = os.path.join(workdir, MODEL_FILE)
  if not overwrite and os.path.exists(path) and latest_step(workdir) is not None:
    saved = read_json(path)
    return ModelSpec(load_tokenizer(saved["tokenizer"], workdir),
                     ModelConfig.from_dict(saved["model"]),
                     np.asarray(saved["verbalizer"], np.int32), saved=True)
  p, pretrained = config.pet, None
  if config.init_from:
    tok, model_cfg, pretrained = _pretrained(config.init_from)
    model_cfg = dataclasses.replace(model_cfg, dropout=config.model.dropout,
                                    attention_dropout=config.model.attention_dropout)
  else:
    literal = [x for x in pet.pattern_pieces(p.pattern) if x not in (pet.SLOT, pet.TEXT)]
    tok = build_tokenizer(config.data, data.texts + literal + list(p.words))
    model_cfg = ModelConfig.for_run(config.model.to_dict(), vocab_size=tok.vocab_size,
                                    train_length=config.data.max_len)
  bound = model_cfg.max_length()
  if bound is not None and config.data.max_len > bound:
    raise ConfigError(f"data.max_len={config.data.max_len} exceeds the length bound {bound} "
                      "of the init_from model")
  verbalizer = pet.verbalizer_ids(tok, p.labels, p.words, p.pattern)
  pet.encode(tok, [""], p.pattern, config.data.max_len)  # refuses a pattern that fills max_len
  return ModelSpec(tok, model_cfg, verbalizer, pretrained)


def save_spec(workdir: str, spec: ModelSpec) -> None:
  if spec.saved:
    return
  spec.tokenizer.save(workdir)
  atomic_write_json(os.path.join(workdir, MODEL_FILE), {
      "model": dataclasses.asdict(spec.model), "tokenizer": spec.tokenizer.kind,
      "verbalizer": spec.verbalizer.tolist()})


def loss_fn(config, model: MlmModel, verbalizer):
  """loss(params, batch, key): the PET loss of a batch {'tokens', 'slots', 'labels'} (plus,
  with 'unlabeled', pet.unlabeled_weight x the MLM loss of BERT masking on those texts)."""
  kind, weight = config.pet.loss, config.pet.unlabeled_weight
  mlm_part = mlm.mlm_loss_fn(model, config.data.mask_rate)
  verbalizer = jnp.asarray(verbalizer)

  def loss(params, batch, key):
    k_drop, k_mlm = jax.random.split(key)
    tokens = batch["tokens"]
    logits = model.apply({"params": params}, tokens, tokens != PAD, deterministic=False,
                         targets_at=batch["slots"], rngs={"dropout": k_drop})
    value, sums = pet_loss(logits, verbalizer, batch["labels"], kind)
    metrics = {"accuracy": sums["correct"] / sums["count"], "pet_loss": value}
    if "unlabeled" in batch:
      extra, aux = mlm_part(params, batch["unlabeled"], k_mlm)
      metrics.update(mlm_loss=extra, mlm_accuracy=aux["accuracy"])
      value = value + weight * extra
    return value, metrics

  return loss


def labeled_batch(config, data: PetData) -> int:
  """Labelled examples per step: train.batch_size, or every shot when there are fewer
  (K shots of C labels can be fewer than a batch)."""
  return min(config.train.batch_size, len(data.train))


class Batches:
  """The labelled batch of a step, and with unlabelled texts their batch beside it."""

  def __init__(self, config, tokenizer, data: PetData):
    self.labeled = ExampleBatches(train_arrays(config, tokenizer, data),
                                  labeled_batch(config, data), config.seed)
    self.unlabeled = None
    if data.unlabeled:
      self.unlabeled = ExampleBatches(
          {"unlabeled": encode_sentences(tokenizer, [e.text for e in data.unlabeled],
                                         config.data.max_len)},
          config.pet.unlabeled_batch, config.seed + 1)

  def batch(self, step: int) -> dict:
    out = self.labeled.batch(step)
    if self.unlabeled is not None:
      out.update(self.unlabeled.batch(step))
    return out


def train(config, workdir: str, *, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> wd.TrainResult:
  """Fine-tunes (or, with train.steps=0, keeps) the MLM in workdir; scores the evaluation set."""
  check_config(config)
  # every file is read, init_from loaded and the verbalizer checked before the workdir is
  # touched: a refusal leaves nothing behind
  data = read_data(config)
  spec = model_spec(config, workdir, data, overwrite)
  changes = wd.prepare(workdir, config, overwrite=overwrite)
  save_spec(workdir, spec)
  model = MlmModel(spec.model)
  length = config.data.max_len
  batch_fn = None
  if config.train.steps > 0:
    batch_fn = Batches(config, spec.tokenizer, data).batch
    if labeled_batch(config, data) < config.train.batch_size:
      print(f"{workdir}: {len(data.train)} training examples, fewer than train.batch_size="
            f"{config.train.batch_size}: each step takes all of them", file=sys.stderr)
  # jitted: initialising op by op costs seconds of dispatch on a CPU
  fresh = jax.jit(lambda key: mlm.init_params(model, key, length))
  pretrained = spec.pretrained
  result = fit(config, workdir,
               init_params=(lambda key: pretrained) if pretrained is not None else fresh,
               loss_fn=loss_fn(config, model, spec.verbalizer), batch_fn=batch_fn,
               tokens_per_step=labeled_batch(config, data) * length if data.train else 0,
               progress=progress, stop_after=stop_after, changes=changes)
  evals = None
  if config.eval.at_end and not result.interrupted:
    run = wd.LoadedRun(config, model, spec.tokenizer, result.state.params, result.step,
                       dict(verbalizer=spec.verbalizer, valid=data.valid))
    evals = score(workdir, run)
  return wd.TrainResult(workdir, result, evals)


def _line(e: dict) -> str:
  return (f"PET accuracy x100 on {e['valid']} ({e['examples']} examples, {e['shots']}), step "
          f"{e['step']}: {100 * e['accuracy']:.2f}")


def report(result: wd.TrainResult) -> str:
  """train.py's output: the accuracy of this run."""
  return "" if result.evaluation is None else _line(result.evaluation)


# ---------------------------------------------------------------------------------------------
# Load and evaluate a workdir

def load(workdir: str, with_params: bool = True) -> wd.LoadedRun:
  """A PET workdir's config, MLM, tokenizer, (with_params) newest checkpoint, and as data its
  verbalizer tokens."""
  config = wd.load_config(workdir)
  path = os.path.join(workdir, MODEL_FILE)
  if config.get("task") != "pet" or not os.path.exists(path):
    raise UserError(f"{workdir!r} is not a workdir of the pet task (no {MODEL_FILE})")
  saved = read_json(path)
  model = MlmModel(ModelConfig.from_dict(saved["model"]))
  tok = load_tokenizer(saved["tokenizer"], workdir)
  data = dict(verbalizer=np.asarray(saved["verbalizer"], np.int32))
  if not with_params:
    return wd.LoadedRun(config, model, tok, None, None, data)
  restored = restore_params(workdir, lambda: mlm.init_params(
      model, jax.random.PRNGKey(0), config.data.max_len), config.train)
  if restored is None:
    raise UserError(f"{workdir!r} has no checkpoint; train it first")
  return wd.LoadedRun(config, model, tok, restored[1], restored[0], data)


def shots_text(config) -> str:
  """'zero-shot', 'K-shot' (per label) or 'all N training examples'."""
  if config.train.steps == 0:
    return "zero-shot"
  return f"{config.pet.shots}-shot" if config.pet.shots else "every training example"


def score(workdir: str, run: wd.LoadedRun) -> dict:
  """Accuracy of a loaded run on its evaluation set, saved in DIR/pet_eval.json."""
  config = run.config
  valid = run.data.get("valid") or examples(config, "valid")
  tokens, slots = pet.encode(run.tokenizer, [e.text for e in valid], config.pet.pattern,
                             config.data.max_len)
  scores = predict_scores(run.model, run.params, tokens, slots, run.data["verbalizer"],
                          config.eval.batch_size)
  result = dict(accuracy(scores, label_indices(config, valid), list(config.pet.labels)),
                step=None if run.step is None else int(run.step), shots=shots_text(config),
                valid=os.path.basename(config.data.valid))
  atomic_write_json(os.path.join(workdir, EVAL_FILE), result)
  return result


def evaluate(workdir: str, *, plot=None, title=None) -> dict:
  """evaluate.py --workdir: accuracy of the latest checkpoint on the run's evaluation set
  (the saved result when it is for that checkpoint)."""
  del plot, title  # options of the table
  return wd.latest_result(workdir, EVAL_FILE, lambda: score(workdir, load(workdir)))


def describe(workdir: str, evaluation: dict) -> str:
  return f"{workdir}: {_line(evaluation)}"


def finished(workdir: str, config=None) -> bool:
  """config's run is in workdir, at config.train.steps, with its end-of-run evaluation."""
  return wd.finished_with(workdir, config, EVAL_FILE)


def table(workdirs, *, plot=None, title=None) -> str:
  """Accuracy x100 (mean ± std over seeds), one row per group of runs that differ only in the
  seed, labelled by the config values in which the rows differ."""
  del title
  if plot:
    raise UserError("the pet table has no plot; drop --plot")
  runs = [mlm.TableRun(d, os.path.basename(os.path.normpath(d)),
                       wd.config_to_dict(wd.load_config(d)), evaluate(d)) for d in workdirs]
  groups = mlm.seed_groups(runs)
  labels = (mlm.group_labels(groups) if len(groups) > 1 else [groups[0][0].results["shots"]])
  cells = {(label, "accuracy"): [100 * r.results["accuracy"] for r in group]
           for label, group in zip(labels, groups)}
  names = sorted({r.results["valid"] for r in runs})
  return (f"PET accuracy x100 on {', '.join(names)}, mean ± std over seeds:\n" +
          seed_table(cells, ["run"], digits=2))


TASK = ModuleTask.of(__name__, name="pet", eval_options=())

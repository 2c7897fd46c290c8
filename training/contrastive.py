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

import collections
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from data import sts
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from evaluation.plots import batch_plot
from evaluation.sts import make_embedder, sts_spearman
from evaluation.tables import seed_table
from model.config import ModelConfig
from model.encoder import MlmModel
from model.sentence import SentenceEncoder, get_pooling
from objectives.accumulation import MODES, make_grad_fn, num_micro_batches
from objectives.contrastive import LossConfig, contrastive_loss
from objectives.mlm import mlm_loss
from training import mlm
from training import workdir as wd
from training.checkpoint import latest_step
from training.checkpoint import restore_params as restore_checkpoint
from training.loop import fit
from training.optimizer import check_train_section
from training.tasks import ModuleTask
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
  restored = restore_checkpoint(workdir, init_fn, train_cfg)
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
    mlm_cfg, tok, mlm_model = _mlm_run(config.init_from)
    model_cfg = dataclasses.replace(mlm_model.cfg, dropout=config.model.dropout,
                                    attention_dropout=config.model.attention_dropout)
    _, pretrained = restore_params(config.init_from, lambda: mlm.init_params(
        mlm_model, jax.random.PRNGKey(0), mlm_cfg.data.train_length), mlm_cfg.train)
  else:
    tok = build_tokenizer(config.data, pairs.sentences())
    # the training length: every example is max_len long
    model_cfg = ModelConfig.for_run(config.model.to_dict(), vocab_size=tok.vocab_size,
                                    train_length=config.data.max_len)
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
  check_train_section(t)
  if t.accumulation != "none":
    num_micro_batches(t.batch_size, t.micro_batch)
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
          stop_after: int | None = None) -> wd.TrainResult:
  """Trains (or resumes) a sentence encoder in workdir; scores config.eval.sts at the end."""
  check_config(config)
  changes = wd.prepare(workdir, config, overwrite=overwrite)
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
               progress=progress, stop_after=stop_after, changes=changes)
  evals = None
  if config.eval.at_end and config.eval.sts and not result.interrupted:
    run = wd.LoadedRun(config, model, tok, result.state.params, result.step)
    evals = score_sts(workdir, run, **configured_evaluation(config))
  return wd.TrainResult(workdir, result, evals)


def _line(evaluation: dict) -> str:
  return (f"STS Spearman x100 on {evaluation['name']} ({evaluation['pairs']} pairs), step "
          f"{evaluation['step']}: {100 * evaluation['spearman']:.2f}")


def report(result: wd.TrainResult) -> str:
  """train.py's output: the STS Spearman of this run."""
  return "" if result.evaluation is None else _line(result.evaluation)


# ---------------------------------------------------------------------------------------------
# Load and evaluate a workdir

def load(workdir: str, with_params: bool = True) -> wd.LoadedRun:
  """A contrastive workdir's config, model, tokenizer and (with_params) newest checkpoint."""
  config = wd.load_config(workdir)
  path = os.path.join(workdir, MODEL_FILE)
  if config.get("task") != "contrastive" or not os.path.exists(path):
    raise UserError(f"{workdir!r} is not a workdir of the contrastive task (no {MODEL_FILE})")
  saved = read_json(path)
  tok = load_tokenizer(saved["tokenizer"], workdir)
  model = sentence_model(config, ModelConfig.from_dict(saved["model"]))
  if not with_params:
    return wd.LoadedRun(config, model, tok, None, None)
  step, params = restore_params(workdir, lambda: init_params(
      model, jax.random.PRNGKey(0), config.data.max_len), config.train)
  return wd.LoadedRun(config, model, tok, params, step)


def configured_evaluation(config) -> dict:
  """The run's own STS evaluation (config.eval), as options of score_sts."""
  e = config.eval
  return dict(sts=e.sts, sts_split=e.split, whitening_k=e.whitening_k if e.whitening else None,
              whitening_corpus="")


def evaluation_options(config, sts=None, sts_split=None, whitening_k=None,
                       whitening_corpus=None) -> dict:
  """evaluate.py's options over the run's configured evaluation: another --sts file takes
  none of the configured split and whitening; any option given replaces the configured one."""
  out = (configured_evaluation(config) if not sts else
         dict(sts=sts, sts_split="", whitening_k=None, whitening_corpus=""))
  given = dict(sts_split=sts_split, whitening_k=whitening_k, whitening_corpus=whitening_corpus)
  out.update({k: v for k, v in given.items() if v is not None})
  if not out["sts"]:
    raise UserError("this run has no STS set to score (its eval.sts is empty); pass --sts FILE "
                    "(an STS Benchmark tsv or s1<TAB>s2<TAB>score file) or --sts synthetic")
  return out


def result_name(sts: str, sts_split: str, whitening_k, whitening_corpus: str) -> str:
  """The key of one evaluation in sts_eval.json: 'file[:split][:whitenK[@corpus]]'."""
  name = os.path.basename(sts) + (f":{sts_split}" if sts_split else "")
  if whitening_k is not None:
    name += f":whiten{whitening_k or 'all'}" + (f"@{os.path.basename(whitening_corpus)}"
                                                if whitening_corpus else "")
  return name


def sts_data(config, spec: str, split: str) -> sts.StsData:
  """An STS file (either format), or `synthetic`: the embedded set of the run's config."""
  if spec == "synthetic":
    s = config.data.synthetic
    return sts.synthetic_sts(s.num_eval, s.seed)
  return sts.read_sts(spec, split or None)


def score_sts(workdir: str, run: wd.LoadedRun, *, sts: str, sts_split: str = "",
              whitening_k=None, whitening_corpus: str = "") -> dict:
  """Spearman of a loaded run on an STS set; saved under its name in DIR/sts_eval.json."""
  config = run.config
  data = sts_data(config, sts, sts_split)
  embed = make_embedder(run.model, run.params, run.tokenizer, config.data.max_len,
                        config.eval.batch_size, project=config.sentence.eval_projection)
  corpus = sts.read_sentences(whitening_corpus) if whitening_corpus else None
  result = {"step": None if run.step is None else int(run.step), "sts": sts,
            "split": sts_split, "whitening_k": whitening_k,
            "whitening_corpus": whitening_corpus, "pairs": len(data),
            "spearman": sts_spearman(embed, data, whitening_k, corpus)}
  name = result_name(sts, sts_split, whitening_k, whitening_corpus)
  path = os.path.join(workdir, "sts_eval.json")
  saved = read_json(path) if os.path.exists(path) else {}
  saved[name] = result
  atomic_write_json(path, saved)
  return dict(result, name=name)


def _saved(workdir: str, step, options: dict) -> dict | None:
  """The saved evaluation with these options if it is for this step."""
  path = os.path.join(workdir, "sts_eval.json")
  name = result_name(**options)
  res = read_json(path).get(name) if os.path.exists(path) else None
  same = res is not None and all(res.get(k) == options[k] for k in ("sts", "whitening_k",
                                                                    "whitening_corpus"))
  if not same or res.get("step") != step or res.get("split") != options["sts_split"]:
    return None
  return dict(res, name=name)


def evaluate(workdir: str, *, sts=None, sts_split=None, whitening_k=None, whitening_corpus=None,
             plot=None, title=None) -> dict:
  """evaluate.py --workdir: STS Spearman of the latest checkpoint, on the run's configured
  STS set unless another is given; the saved result is reused if it is for that checkpoint."""
  del plot, title  # options of the table
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  options = evaluation_options(wd.load_config(workdir), sts, sts_split, whitening_k,
                               whitening_corpus)
  saved = _saved(workdir, latest_step(workdir), options)
  return saved if saved is not None else score_sts(workdir, load(workdir), **options)


def describe(workdir: str, evaluation: dict) -> str:
  return f"{workdir}: {_line(evaluation)}"


def finished(workdir: str, config=None) -> bool:
  """config's run is in workdir, at config.train.steps, with its end-of-run STS score."""
  if not wd.reached(workdir, config):
    return False
  config = config or wd.load_config(workdir)
  if not (config.eval.at_end and config.eval.sts):
    return True
  return _saved(workdir, config.train.steps, configured_evaluation(config)) is not None


# ---------------------------------------------------------------------------------------------
# The batch-size study's table: loss x accumulation (rows) by batch size (columns)

# keys that do not change what a run computes, or that the table's title states
NOT_COMPARED = ("seed", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "eval.")


def _study_row(workdir: str, evaluation: dict) -> dict:
  c = wd.config_to_dict(wd.load_config(workdir))
  t = c["train"]
  flat = {k: v for k, v in wd.flatten(c).items() if not k.startswith(NOT_COMPARED)}
  if t["batch_size"] <= t["micro_batch"]:  # one micro-batch: every mode is the same program
    flat.pop("train.accumulation")
  return dict(loss=c["loss"]["name"], mode=t["accumulation"], batch=t["batch_size"],
              micro=t["micro_batch"], seed=c["seed"], spearman=100 * evaluation["spearman"],
              name=evaluation["name"], workdir=workdir, compared=flat)


def study_cells(rows) -> dict:
  """{(loss, mode, batch): [Spearman per seed]}, runs that differ only in seed together.

  A run whose batch fits in one micro-batch counts for every mode of the table. Two runs in
  one cell that differ in anything else than the seed are refused, naming the keys.
  """
  modes = {r["mode"] for r in rows if r["batch"] > r["micro"]}
  cells, first = collections.defaultdict(list), {}
  for r in rows:
    for mode in (modes | {r["mode"]} if r["batch"] <= r["micro"] else {r["mode"]}):
      cell = (r["loss"], mode, r["batch"])
      other = first.setdefault(cell, r)
      keys = [k for k, _, _ in wd.differences(other["compared"], r["compared"])]
      if keys:
        raise UserError(f"{other['workdir']} and {r['workdir']} fall in one cell (loss "
                        f"{cell[0]}, accumulation {mode}, batch {cell[2]}) but differ in "
                        f"{', '.join(keys)}, not only in the seed; tabulate them separately")
      cells[cell].append(r["spearman"])
  return dict(cells)


def mode_gap(rows, a: str = "none", b: str = "exact") -> str:
  """Largest |Spearman(a) - Spearman(b)| over runs with the same loss, batch and seed, where
  the batch exceeds the micro-batch (so that the two modes really are different programs)."""
  by = {(r["loss"], r["mode"], r["batch"], r["seed"]): r for r in rows if r["batch"] > r["micro"]}
  gaps = [(abs(r["spearman"] - by[(l, b, n, s)]["spearman"]), l, n, s)
          for (l, m, n, s), r in by.items() if m == a and (l, b, n, s) in by]
  if not gaps:
    return ""
  worst = max(gaps)
  return (f"accumulation={a} vs {b}: {len(gaps)} paired runs (same loss, batch, seed), largest "
          f"|difference| {worst[0]:.3f} Spearman points ({worst[1]}, batch {worst[2]}, seed "
          f"{worst[3]})")


def table(workdirs, *, sts=None, sts_split=None, whitening_k=None, whitening_corpus=None,
          plot=None, title=None) -> str:
  """STS Spearman x100, mean ± std over seeds, by loss and accumulation (rows) and batch
  (columns); plot: also save the Spearman-vs-batch plot there."""
  rows = [_study_row(d, evaluate(d, sts=sts, sts_split=sts_split, whitening_k=whitening_k,
                                 whitening_corpus=whitening_corpus)) for d in workdirs]
  cells = study_cells(rows)
  names = sorted({r["name"] for r in rows})
  if plot:
    batch_plot(cells, plot, title or ", ".join(names))
  text = (f"STS Spearman x100 on {', '.join(names)}, mean ± std over seeds:\n" +
          seed_table(cells, ["loss", "accumulation"],
                     row_order=lambda k: (k[0], list(MODES).index(k[1]))))
  gap = mode_gap(rows)
  return text + (f"\n\n{gap}" if gap else "")


TASK = ModuleTask.of(__name__, name="contrastive", eval_options=(
    "sts", "sts_split", "whitening_k", "whitening_corpus", "plot", "title"))

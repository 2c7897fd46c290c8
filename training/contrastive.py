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
import copy
import dataclasses
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from data import sts
from data.sts import read_sentences
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from evaluation.plots import batch_plot
from evaluation.sts import make_embedder, sts_spearman
from evaluation.tables import seed_table
from generation import similar
from generation.seq2seq import check_decodable, prompt_length
from generation.strategies import Strategy
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
# The data budget and the learning-rate rule across batch sizes

# the exponent of (batch / lr_base_batch) in the learning rate
LR_RULES = {"constant": 0.0, "sqrt": 0.5, "linear": 1.0}


def budget_steps(t, num_examples: int) -> int:
  """Optimizer steps of train section t: train.steps, or with train.epochs > 0
  ceil(epochs * num_examples / batch_size), so that every batch size sees the same number of
  examples (the batches of an epoch never span two epochs, so the ceil goes on into the next)."""
  epochs = t.get("epochs", 0.0)
  if epochs <= 0:
    return int(t.steps)
  # rounded first: 0.1 * 640 / 64 is 1.0000000000000002 in floating point, one step too many
  return math.ceil(round(epochs * num_examples / t.batch_size, 9))


def peak_learning_rate(t) -> float:
  """learning_rate * (batch_size / lr_base_batch) ** LR_RULES[lr_rule]; batch_size is the
  effective batch (accumulation splits it, the optimizer sees its gradient once)."""
  rule = t.get("lr_rule", "constant")
  return float(t.learning_rate) * (t.batch_size / t.get("lr_base_batch", 64)) ** LR_RULES[rule]


def warmup_steps(t, steps: int) -> int:
  """train.warmup_fraction of the steps (rounded) when > 0, else train.warmup_steps."""
  fraction = t.get("warmup_fraction", 0.0)
  return round(fraction * steps) if fraction > 0 else int(t.warmup_steps)


def with_budget(config, num_examples: int):
  """A copy of config with train.steps resolved (budget_steps): what the workdir records, and
  what resuming, finished() and a sweep's skipping compare with."""
  out = copy.deepcopy(config)
  out.train.steps = budget_steps(config.train, num_examples)
  return out


def optimizer_config(config):
  """A copy of a resolved config (with_budget) with the learning rate and warmup the optimizer
  uses: the rule's learning rate at this batch, the warmup as steps."""
  out = copy.deepcopy(config)
  out.train.learning_rate = peak_learning_rate(config.train)
  out.train.warmup_steps = warmup_steps(config.train, config.train.steps)
  return out


def budgeted(config):
  """config with train.steps resolved from its training data (read only when epochs > 0)."""
  if config.train.get("epochs", 0.0) <= 0:
    return config
  return with_budget(config, len(training_pairs(config)))


def describe_budget(config, num_examples: int) -> str:
  """One line: the examples, steps, learning rate and warmup this run resolved to."""
  t, o = config.train, optimizer_config(config).train
  steps = (f"train.epochs={t.epochs:g} of {num_examples} examples at batch {t.batch_size}: "
           f"{t.steps} steps" if t.epochs > 0 else f"{t.steps} steps")
  rule = (f" ({t.lr_rule} rule from {t.learning_rate:g} at batch {t.lr_base_batch})"
          if t.lr_rule != "constant" else "")
  return f"{steps}; peak learning rate {o.learning_rate:.3g}{rule}; warmup {o.warmup_steps} steps"


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
  check_train_section(t, min_steps=0)  # steps=0: evaluate the encoder as initialised
  if t.epochs < 0:
    raise ConfigError(f"train.epochs must be at least 0 (0: train.steps), got {t.epochs}")
  if t.lr_rule not in LR_RULES:
    raise ConfigError(f"unknown train.lr_rule {t.lr_rule!r}; valid names: {list(LR_RULES)}")
  if t.lr_base_batch <= 0:
    raise ConfigError(f"train.lr_base_batch must be positive, got {t.lr_base_batch}")
  if not 0 <= t.warmup_fraction < 1:
    raise ConfigError(f"train.warmup_fraction must be in [0, 1), got {t.warmup_fraction}")
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
  """Trains (or resumes) a sentence encoder in workdir; scores config.eval.sts at the end.

  With train.steps = 0 (and no epochs) nothing is trained: the encoder as initialised (from
  init_from, or at random) is checkpointed at step 0 and scored, the untouched baseline.
  """
  check_config(config)
  pairs = training_pairs(config)
  config = with_budget(config, len(pairs))  # the data is read first: nothing half-written
  changes = wd.prepare(workdir, config, overwrite=overwrite)
  t = config.train
  if t.epochs > 0 or t.lr_rule != "constant" or t.warmup_fraction > 0:  # what was resolved
    print(f"{workdir}: {describe_budget(config, len(pairs))}", file=sys.stderr)
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
  result = fit(optimizer_config(config), workdir,
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
  if whitening_k:  # refused before anything is embedded (whitening.fit says the same)
    s = config.sentence
    width = s.projection if s.projection and s.eval_projection else run.model.cfg.width
    if not 0 < whitening_k <= width:
      raise UserError(f"whitening keeps k in [1, {width}] dimensions (0 = all), got "
                      f"{whitening_k}: the embeddings of this run have {width}")
  data = sts_data(config, sts, sts_split)
  embed = make_embedder(run.model, run.params, run.tokenizer, config.data.max_len,
                        config.eval.batch_size, project=config.sentence.eval_projection)
  # (`sts` is the set's name here, not the data module)
  corpus = read_sentences(whitening_corpus) if whitening_corpus else None
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
             plot=None, title=None, generate=None, **generation) -> dict:
  """evaluate.py --workdir: STS Spearman of the latest checkpoint, on the run's configured
  STS set unless another is given; the saved result is reused if it is for that checkpoint.
  generate=N: similar sentences of a simbert run instead (generate_similar)."""
  del plot, title  # options of the table
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  if generate is not None:
    return generate_similar(workdir, generate, **generation)
  if generation:
    raise UserError(f"--{sorted(generation)[0]} is an option of --generate N (similar-sentence "
                    "generation); add --generate N")
  options = evaluation_options(wd.load_config(workdir), sts, sts_split, whitening_k,
                               whitening_corpus)
  saved = _saved(workdir, latest_step(workdir), options)
  return saved if saved is not None else score_sts(workdir, load(workdir), **options)


def describe(workdir: str, evaluation: dict) -> str:
  if "generations" in evaluation:
    return (f"{workdir}: similar sentences at step {evaluation['step']} ({evaluation['how']}), "
            f"by cosine similarity to the input\n{similar.describe(evaluation['generations'])}")
  return f"{workdir}: {_line(evaluation)}"


# ---------------------------------------------------------------------------------------------
# SimBERT's similar-sentence generation

GENERATION_OPTIONS = ("inputs", "text", "strategy", "top_k", "top_p", "temperature",
                      "beam_width", "max_new", "seed")


def generation_strategy(count: int, strategy: str = "greedy", top_k: int = 0,
                        top_p: float = 1.0, temperature: float = 1.0,
                        beam_width=None) -> Strategy:
  """The decoding strategy of evaluate.py's options, refusing what does not fit together."""
  if count < 1:
    raise UserError(f"--generate N needs N >= 1 candidates per input, got {count}")
  if strategy == "greedy" and count > 1:
    raise UserError(f"greedy decoding gives one candidate per input, not {count}; use "
                    "--strategy sample or --strategy beam for --generate N > 1")
  if strategy != "sample" and (top_k or top_p != 1.0 or temperature != 1.0):
    raise UserError(f"--top_k, --top_p and --temperature apply to --strategy sample, not "
                    f"{strategy}")
  if strategy != "beam" and beam_width is not None:
    raise UserError(f"--beam_width applies to --strategy beam, not {strategy}")
  width = count if beam_width is None else beam_width
  if strategy == "beam" and width < count:
    raise UserError(f"--beam_width {width} keeps fewer beams than the {count} candidates "
                    "asked for; use --beam_width >= N")
  return Strategy(strategy, temperature=temperature, top_k=top_k, top_p=top_p,
                  width=width).check()


def generate_similar(workdir: str, count: int, *, inputs=None, text=None, strategy="greedy",
                     top_k=0, top_p=1.0, temperature=1.0, beam_width=None, max_new=None,
                     seed=0) -> dict:
  """evaluate.py --generate N: for each input sentence (--inputs FILE, --text), up to N
  distinct generated similar sentences ranked by the model's own embedding (nothing saved)."""
  config = wd.load_config(workdir)
  if config.data.signal != "simbert":
    raise UserError(f"{workdir} was trained with data.signal={config.data.signal}, without a "
                    "language-model head; --generate needs a run trained with signal=simbert")
  how = generation_strategy(count, strategy, top_k, top_p, temperature, beam_width)
  sentences = (read_sentences(inputs) if inputs else []) + list(text or [])
  if not sentences:
    raise UserError("--generate needs input sentences: --inputs FILE (one per line) or "
                    "--text 'a sentence' (repeatable)")
  if max_new is None:  # what segment B held in training: a sentence's tokens and its [SEP]
    max_new = (config.data.max_len - 3) // 2 + 1
  if max_new < 1:
    raise UserError(f"--max_new must be at least 1, got {max_new}")
  # a model the cache cannot decode is refused before its checkpoint is read
  check_decodable(load(workdir, with_params=False).model,
                  prompt_length(config.data.max_len) + max_new)
  run = load(workdir)
  embed = make_embedder(run.model, run.params, run.tokenizer, config.data.max_len,
                        config.eval.batch_size, project=config.sentence.eval_projection)
  results = similar.similar_sentences(
      run.model, run.params, run.tokenizer, sentences, embed, count=count,
      max_len=config.data.max_len, max_new=max_new, strategy=how, seed=seed)
  return {"step": int(run.step), "how": describe_strategy(how, count, max_new),
          "generations": results}


def describe_strategy(how: Strategy, count: int, max_new: int) -> str:
  if how.name == "greedy":
    what = "greedy"
  elif how.name == "beam":
    what = f"beam search, width {how.width}, best {count}"
  else:
    what = (f"{count} samples, temperature {how.temperature:g}, top_k {how.top_k or 'all'}, "
            f"top_p {how.top_p:g}")
  return f"{what}, at most {max_new} tokens"


def finished(workdir: str, config=None) -> bool:
  """config's run is in workdir, at its resolved train.steps (budget_steps), with its
  end-of-run STS score."""
  if config is not None:
    config = budgeted(config)
  if not wd.reached(workdir, config):
    return False
  config = config or wd.load_config(workdir)
  if not (config.eval.at_end and config.eval.sts):
    return True
  return _saved(workdir, config.train.steps, configured_evaluation(config)) is not None


# ---------------------------------------------------------------------------------------------
# The study's tables: loss x accumulation (rows) by batch size (columns), or by temperature

# keys that do not change what a run computes, or that the table's title states
NOT_COMPARED = ("seed", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "eval.", "mesh.")
# keys a study varies besides loss, accumulation, batch and seed (the study's questions): each
# that differs among the tabulated runs labels the rows by its value, and the temperature is
# the column where the batch is the same in every run
STUDY_AXES = ("sentence.pooling", "loss.similarity", "loss.temperature", "data.signal", "data.train_format",
              "data.train", "train.epochs", "train.lr_rule", "train.learning_rate")
COLUMNS = ("train.batch_size", "loss.temperature")
# keys added after runs were made: a run whose config lacks one did what wd.LEGACY says
ADDED_LATER = ("loss.similarity", "train.epochs", "train.lr_rule", "train.lr_base_batch",
               "train.warmup_fraction")


def _study_row(workdir: str, evaluation: dict) -> dict:
  c = wd.config_to_dict(wd.load_config(workdir))
  t = c["train"]
  flat = wd.flatten(c)
  flat = dict({k: wd.LEGACY[k](flat) for k in ADDED_LATER},
              **{k: v for k, v in flat.items() if not k.startswith(NOT_COMPARED)})
  if t["batch_size"] <= t["micro_batch"]:  # one micro-batch: every mode is the same program
    flat.pop("train.accumulation")
  return dict(loss=c["loss"]["name"], mode=t["accumulation"], batch=t["batch_size"],
              micro=t["micro_batch"], seed=c["seed"], spearman=100 * evaluation["spearman"],
              name=evaluation["name"], workdir=workdir, compared=flat,
              steps=t["steps"], lr=peak_learning_rate(wd.load_config(workdir).train))


def short_name(key: str) -> str:
  return key.rpartition(".")[2]


def study_layout(rows) -> tuple[str, list]:
  """(column key, row label keys) of a table of these rows; sets each row's 'x' (its column
  value) and 'labels' (its values of the label keys) and takes both out of 'compared'.

  The column is the batch size, or the temperature where every run has the same batch and
  the temperature varies; the labels are the STUDY_AXES that differ among the runs.
  """
  def varies(key):
    return len({cell_text(r["compared"].get(key)) for r in rows}) > 1

  column = "loss.temperature" if not varies("train.batch_size") and varies(
      "loss.temperature") else "train.batch_size"
  labels = [k for k in STUDY_AXES if k != column and varies(k)]
  for r in rows:
    r["x"] = r["compared"][column]
    r["labels"] = tuple(cell_text(r["compared"].get(k)) for k in labels)
    for k in [column, *labels]:
      r["compared"].pop(k, None)
  return column, labels


def cell_text(value) -> str:
  """A config value as a table cell shows it (a file path by its name)."""
  if isinstance(value, str) and os.sep in value:
    return os.path.basename(value)
  return "-" if value is None else format(value, "g") if isinstance(value, float) else str(value)


def study_cells(rows) -> dict:
  """{(loss, mode, *labels, column): [Spearman per seed]}, runs that differ only in seed
  together; column is a row's 'x' (study_layout), else its batch, labels its 'labels'.

  A run whose batch fits in one micro-batch counts for every mode of the table. Two runs in
  one cell that differ in anything else than the seed are refused, naming the keys.
  """
  modes = {r["mode"] for r in rows if r["batch"] > r["micro"]}
  cells, first = collections.defaultdict(list), {}
  for r in rows:
    for mode in (modes | {r["mode"]} if r["batch"] <= r["micro"] else {r["mode"]}):
      cell = (r["loss"], mode, *r.get("labels", ()), r.get("x", r["batch"]))
      other = first.setdefault(cell, r)
      keys = [k for k, _, _ in wd.differences(other["compared"], r["compared"])]
      if keys:
        raise UserError(f"{other['workdir']} and {r['workdir']} fall in one cell (loss "
                        f"{cell[0]}, accumulation {mode}, {' '.join(map(str, cell[2:]))}) but "
                        f"differ in {', '.join(keys)}, not only in the seed; tabulate them "
                        "separately")
      cells[cell].append(r["spearman"])
  return dict(cells)


def mode_gap(rows, a: str = "none", b: str = "exact") -> str:
  """Largest |Spearman(a) - Spearman(b)| over runs with the same loss, labels, batch and seed,
  where the batch exceeds the micro-batch (so that the two modes really are different
  programs)."""
  by = {(r["loss"], r["mode"], r.get("labels", ()), r["batch"], r["seed"]): r
        for r in rows if r["batch"] > r["micro"]}
  gaps = [(abs(r["spearman"] - by[(l, b, x, n, s)]["spearman"]), l, n, s)
          for (l, m, x, n, s), r in by.items() if m == a and (l, b, x, n, s) in by]
  if not gaps:
    return ""
  worst = max(gaps)
  return (f"accumulation={a} vs {b}: {len(gaps)} paired runs (same loss, batch, seed), largest "
          f"|difference| {worst[0]:.3f} Spearman points ({worst[1]}, batch {worst[2]}, seed "
          f"{worst[3]})")


def budget_line(rows, column: str) -> str:
  """The steps and peak learning rate each column resolved to (they vary with the batch under
  train.epochs and train.lr_rule); '' when every run has the same."""
  seen = sorted({(r["x"], r["steps"], r["lr"]) for r in rows}, key=lambda v: (v[0], v[1:]))
  if len({(steps, lr) for _, steps, lr in seen}) < 2:
    return ""
  name = short_name(column)
  return "updates and peak learning rate: " + ", ".join(
      f"{name} {x}: {steps} steps, lr {lr:.3g}" for x, steps, lr in seen)


def table(workdirs, *, sts=None, sts_split=None, whitening_k=None, whitening_corpus=None,
          plot=None, title=None, **generation) -> str:
  """STS Spearman x100, mean ± std over seeds, by loss, accumulation and the varying study axes
  (rows) and batch or temperature (columns); plot: also save Spearman against the column."""
  if generation:
    raise UserError(f"--{sorted(generation)[0]} generates from one workdir: pass --workdir DIR "
                    "without --table")
  rows = [_study_row(d, evaluate(d, sts=sts, sts_split=sts_split, whitening_k=whitening_k,
                                 whitening_corpus=whitening_corpus)) for d in workdirs]
  column, labels = study_layout(rows)
  cells = study_cells(rows)
  names = sorted({r["name"] for r in rows})
  short = [short_name(k) for k in labels]
  if plot:
    # one line per accumulation mode and label values, one panel per loss
    series = {(k[0], ", ".join([f"accumulation={k[1]}"] + [f"{n}={v}" for n, v in zip(
        short, k[2:-1])]) if labels else k[1], k[-1]): v for k, v in cells.items()}
    batch_plot(series, plot, title or ", ".join(names),
               xlabel="batch size (examples)" if column == "train.batch_size" else
               "temperature", base=2 if column == "train.batch_size" else 10)
  by = "" if column == "train.batch_size" else f" (columns: {short_name(column)})"
  text = (f"STS Spearman x100 on {', '.join(names)}, mean ± std over seeds{by}:\n" +
          seed_table(cells, ["loss", "accumulation", *short],
                     row_order=lambda k: (k[0], list(MODES).index(k[1]), k[2:])))
  notes = [n for n in (budget_line(rows, column), mode_gap(rows)) if n]
  return text + "".join(f"\n\n{n}" for n in notes)


TASK = ModuleTask.of(__name__, name="contrastive", eval_options=(
    "sts", "sts_split", "whitening_k", "whitening_corpus", "plot", "title", "generate",
    *GENERATION_OPTIONS))

"""The mlm task: corpus -> tokenizer -> packed streams -> model -> loss; accuracy by length.

Training ends with the run's evaluation by length (eval.json); evaluate.py scores a workdir
the same way (optionally with model fields changed, --model_override: eval_<tag>.json) or
measures its attention entropy by length (entropy.json). A saved evaluation is reused while
it is for the latest checkpoint and covers the lengths asked for.

A finished run also keeps DIR/summary.json (its config, seed, commit, training time and
results by length), written at the end of training and by each evaluation of its own model;
tables can be made from those files alone (evaluate.py --summaries), so committed summaries
regenerate a results page without the checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.common import variant_text
from configs.variants import _typed
from data.corpus import load_documents, split_documents
from data.mlm import TrainBatches, mlm_mask, pack
from data.tokenizers import PAD, build_tokenizer, load_tokenizer
from evaluation.entropy import entropy_by_length
from evaluation.mlm_by_length import evaluate_lengths, split_lengths
from evaluation.plots import length_plot
from evaluation.tables import length_table, seed_length_table
from model.config import ModelConfig, eval_time_fields, field_defaults
from model.encoder import MlmModel
from objectives.mlm import mlm_loss
from training import workdir as wd
from training.checkpoint import latest_step, restore_params
from training.loop import fit, progress_bar
from training.optimizer import check_train_section
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
  # runs made before data.split_seed existed split with their own seed (workdir.LEGACY)
  split_seed = d.get("split_seed", config.seed)
  train_docs, valid_docs = split_documents(docs, d.valid_fraction, split_seed)
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
  return ModelConfig.for_run(config.model.to_dict(), vocab_size=vocab_size,
                             train_length=config.data.train_length)


def init_params(model: MlmModel, key, length: int):
  tokens = np.zeros((1, length), np.int32)
  return model.init({"params": key}, tokens, tokens != PAD)["params"]


def mlm_loss_fn(model: MlmModel, mask_rate: float, head_everywhere: bool = False):
  """loss(params, tokens, key): masks with one key, drops out with another.

  head_everywhere: the MLM head computes logits at every position (as HuggingFace's heads
  do) and the loss weighs the masked ones; the same value at the head's full cost, which
  benchmarks/peers.py measures. Training runs the head at the masked positions only."""

  def loss(params, tokens, key):
    k_mask, k_drop = jax.random.split(key)
    inputs, positions, targets, weights = mlm_mask(k_mask, tokens, vocab_size=model.cfg.vocab_size,
                                                   rate=mask_rate)
    if head_everywhere:  # every position a target, weighted 0 unless it was picked
      rows = np.arange(tokens.shape[0])[:, None]
      weights = jnp.zeros(tokens.shape, weights.dtype).at[rows, positions].set(weights)
      targets, positions = tokens, None
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
  # eval.lengths past the bound are not refused here: the evaluation records them as refused
  # (a result of a length study: learned positions cannot go past their table)
  if bound is not None and config.data.train_length > bound:
    raise ConfigError(f"data.train_length={config.data.train_length} exceeds the model's "
                     f"length bound {bound}; raise model.max_len")
  check_train_section(config.train)
  if not 0.0 < config.data.mask_rate < 1.0:
    raise ConfigError(f"data.mask_rate must be in (0, 1), got {config.data.mask_rate}")


# ---------------------------------------------------------------------------------------------
# Train

def train(config, workdir: str, *, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> wd.TrainResult:
  """Trains (or resumes) an MLM in workdir; evaluates by length at the end if configured."""
  # everything that can be refused is refused before the corpus is read or anything compiled
  check_config(config)
  began = time.perf_counter()
  changes = wd.prepare(workdir, config, overwrite=overwrite)
  from_step = latest_step(workdir) or 0
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
  trained = time.perf_counter()
  evals = None
  if config.eval.at_end and not result.interrupted:
    run = wd.LoadedRun(config, model, data.tokenizer, result.state.params, result.step, data)
    evals = score_lengths(workdir, run, progress=progress)
    if config.eval.get("entropy", False):
      measure_entropies(workdir, run, progress=progress)
  if not result.interrupted:
    write_summary(workdir, training={
        "seconds": round(trained - began, 1), "from_step": from_step, "to_step": result.step,
        "evaluation_seconds": round(time.perf_counter() - trained, 1), "commit": code_version()})
  return wd.TrainResult(workdir, result, evals)


def report(result: wd.TrainResult) -> str:
  """train.py's output: the length table of this run."""
  if result.evaluation is None:
    return ""
  return (f"MLM accuracy (%) by evaluation length, step {result.evaluation['step']}:\n" +
          length_table([(result.workdir, result.evaluation["lengths"])],
                       refused={result.workdir: result.evaluation.get("refused", [])}))


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


def _by_length(workdir: str, run: wd.LoadedRun, lengths, out: str, score, progress: bool = True,
               desc: str = "eval") -> dict:
  """score([n]) -> {n: result} for each usable length (the bar advances per length), saved
  to out as {'step', 'lengths', 'refused'}."""
  usable, refused = usable_lengths(workdir, run.model, lengths or run.config.eval.lengths)
  scored = {}
  with progress_bar(len(usable), desc, progress) as bar:
    for n in usable:
      bar.set_postfix(length=n)
      scored.update(score([n]))
      bar.update(1)
  result = {"step": int(run.step) if run.step is not None else None,
            "lengths": {str(n): v for n, v in scored.items()}, "refused": refused}
  atomic_write_json(out, result)
  return result


def score_lengths(workdir: str, run: wd.LoadedRun, lengths=None, out: str | None = None,
                  progress: bool = True) -> dict:
  """MLM accuracy and loss of a loaded run at each length; saved to out (eval.json)."""
  e = run.config.eval
  return _by_length(workdir, run, lengths, out or os.path.join(workdir, "eval.json"),
                    lambda usable: evaluate_lengths(
                        run.model, run.params, run.data.valid_stream, usable,
                        vocab_size=run.tokenizer.vocab_size, mask_rate=run.config.data.mask_rate,
                        max_tokens=e.max_tokens, batch_tokens=e.batch_tokens, seed=e.seed),
                    progress)


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


def _saved(path: str, step, lengths=None) -> dict | None:
  """The saved evaluation at path if it is for this step and covers these lengths (None:
  whatever lengths it has)."""
  if not os.path.exists(path):
    return None
  res = read_json(path)
  if lengths is None:
    return res if res.get("step") == step else None
  have = {int(n) for n in res["lengths"]} | set(res.get("refused", []))
  if res.get("step") != step or not {int(n) for n in lengths} <= have:
    return None
  return dict(res, lengths={n: v for n, v in res["lengths"].items() if int(n) in
                            {int(m) for m in lengths}})


def _workdir_config(workdir: str, overrides=()):
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")
  return apply_overrides(wd.load_config(workdir), overrides)


def scores(workdir: str, lengths=None, overrides=(), progress: bool = True) -> dict:
  """MLM accuracy by length of a workdir's latest checkpoint: the saved one if up to date."""
  config = _workdir_config(workdir, overrides)
  path = _result_path(workdir, "eval", overrides)
  wanted = [int(n) for n in (lengths or config.eval.lengths)]
  result = _saved(path, latest_step(workdir), wanted)
  if result is None:
    result = score_lengths(workdir, load(workdir, config=config), wanted, out=path,
                           progress=progress)
  if not overrides:  # the run's own model: its summary
    write_summary(workdir)
  return result


def measure_entropies(workdir: str, run: wd.LoadedRun, lengths=None, out: str | None = None,
                      progress: bool = True) -> dict:
  """Mean attention entropy of a loaded run at each length; saved to out (entropy.json)."""
  e = run.config.eval
  return _by_length(workdir, run, lengths, out or os.path.join(workdir, "entropy.json"),
                    lambda usable: entropy_by_length(
                        run.model, run.params, run.data.valid_stream, usable,
                        max_tokens=e.max_tokens, batch_tokens=e.batch_tokens),
                    progress, desc="entropy")


def entropies(workdir: str, lengths=None, overrides=(), progress: bool = True) -> dict:
  """Mean attention entropy by length of a workdir's latest checkpoint (entropy.json)."""
  run = load(workdir, config=_workdir_config(workdir, overrides))
  result = measure_entropies(workdir, run, lengths, _result_path(workdir, "entropy", overrides),
                             progress)
  if not overrides:
    write_summary(workdir)
  return result


def evaluate(workdir: str, *, lengths=None, metric: str = "accuracy", entropy: bool = False,
             model_override=(), baseline=None, progress: bool = True, plot=None,
             title=None) -> dict:
  """evaluate.py --workdir: accuracy by length (or attention entropy, entropy=True)."""
  del metric, baseline, plot, title  # options of the table
  if entropy:
    return entropies(workdir, lengths, model_override, progress)
  return scores(workdir, lengths, model_override, progress)


def describe(workdir: str, evaluation: dict) -> str:
  del workdir
  return json.dumps(evaluation["lengths"], indent=2)


def finished(workdir: str, config=None) -> bool:
  """config's run is in workdir, at config.train.steps, with its end-of-run eval.json (and
  entropy.json when eval.entropy asks for it)."""
  if not wd.reached(workdir, config):
    return False
  config = config or wd.load_config(workdir)
  if not config.eval.at_end:
    return True
  wanted = ["eval"] + (["entropy"] if config.eval.get("entropy", False) else [])
  return all(_saved(os.path.join(workdir, f"{kind}.json"), config.train.steps,
                    config.eval.lengths) is not None for kind in wanted)


# ---------------------------------------------------------------------------------------------
# The run's summary (DIR/summary.json)

SUMMARY = "summary.json"


def code_version() -> dict | None:
  """{"hash": HEAD, "dirty": whether tracked files differ from it} of the checkout this code
  runs from; None outside a git checkout (or without git)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=30)
    status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return None
  if head.returncode or status.returncode:
    return None
  return {"hash": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def write_summary(workdir: str, training: dict | None = None) -> dict | None:
  """Writes DIR/summary.json for a finished run (latest checkpoint at train.steps) from its
  config and its saved results for that checkpoint (eval.json, and entropy.json if measured).

  training: the session that finished the run (seconds, from_step, to_step, its commit);
  kept from the previous summary when not given. The file is only rewritten when something in
  it changes, and 'commit' is the code that wrote that content. Returns the summary, or None
  for an unfinished run.
  """
  if not wd.reached(workdir):
    return None
  step = latest_step(workdir)
  path = os.path.join(workdir, SUMMARY)
  old = read_json(path) if os.path.exists(path) else {}
  config = wd.config_to_dict(wd.load_config(workdir))
  evaluation = _saved(os.path.join(workdir, "eval.json"), step) or {}
  summary = {"name": os.path.basename(os.path.normpath(workdir)), "task": "mlm",
             "seed": config["seed"], "step": step, "config": config,
             "lengths": evaluation.get("lengths", {}), "refused": evaluation.get("refused", []),
             "training": training or (old.get("training") if old.get("step") == step else None)}
  entropy = _saved(os.path.join(workdir, "entropy.json"), step)
  if entropy:
    summary["entropy"] = entropy["lengths"]
  summary = wd.as_stored(summary)
  if {k: v for k, v in old.items() if k != "commit"} == summary:
    return old
  summary["commit"] = code_version()
  atomic_write_json(path, summary)
  return summary


# ---------------------------------------------------------------------------------------------
# Tables of several runs (from workdirs or summaries)

# keys that do not change what a run computes (cadence), or are the table's columns; the seed
# is what a row's runs differ in
NOT_COMPARED = ("seed", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "eval.lengths", "eval.at_end", "eval.entropy", "mesh.")


@dataclasses.dataclass
class TableRun:
  """One run of a table: from a workdir or from its summary.json."""
  path: str
  name: str
  config: dict
  results: dict  # {length: {metric: value}}
  refused: tuple = ()  # lengths its model cannot encode (length-bound positions)

  @property
  def seed(self):
    return self.config["seed"]

  @property
  def compared(self) -> dict:
    return {k: v for k, v in wd.flatten(self.config).items() if not k.startswith(NOT_COMPARED)}

  @property
  def label(self) -> str:
    """'name (position, scale)': the row of a run in a table without seed groups."""
    m = self.config.get("model", {})
    return f"{self.name} ({m.get('position')}, {m.get('scale')})"


def is_summary(path: str) -> bool:
  return path.endswith(".json") and os.path.isfile(path)


def _summary_run(path: str, lengths, entropy: bool, model_override) -> TableRun:
  if model_override:
    raise UserError(f"--model_override needs the checkpoints: {path} is a summary (it holds "
                    "the run's own evaluation only); pass the workdir instead")
  summary = read_json(path)
  kind = "entropy" if entropy else "lengths"
  results = summary.get(kind) or {}
  if not results:
    what = "attention entropy" if entropy else "evaluation"
    raise UserError(f"summary {path} holds no {what}; run evaluate.py --workdir on its workdir"
                    f"{' --entropy' if entropy else ''} and copy the new summary.json")
  if lengths:
    have = {int(n) for n in results} | {int(n) for n in summary.get("refused", [])}
    missing = sorted({int(n) for n in lengths} - have)
    if missing:
      raise UserError(f"summary {path} has no result at lengths {missing} (it has "
                      f"{sorted(int(n) for n in results)}); evaluate the workdir at them")
    results = {n: v for n, v in results.items() if int(n) in {int(m) for m in lengths}}
  return TableRun(path, summary["name"], summary["config"], results,
                  tuple(int(n) for n in summary.get("refused", [])))


def _table_run(entry: str, lengths, entropy: bool, model_override, progress: bool) -> TableRun:
  """A workdir's results (computed if not saved) or a summary.json's."""
  if is_summary(entry):
    return _summary_run(entry, lengths, entropy, model_override)
  measure = entropies if entropy else scores
  result = measure(entry, lengths, model_override, progress)
  return TableRun(entry, os.path.basename(os.path.normpath(entry)),
                  wd.config_to_dict(_workdir_config(entry)), result["lengths"],
                  tuple(int(n) for n in result.get("refused", [])))


def seed_groups(runs) -> list[list[TableRun]]:
  """Runs that differ only in the seed (and cadence: NOT_COMPARED), in order of appearance."""
  groups = []
  for run in runs:
    for group in groups:
      if not wd.differences(group[0].compared, run.compared):
        group.append(run)
        break
    else:
      groups.append([run])
  return groups


def group_labels(groups) -> list[str]:
  """'key=value,...' of the config values in which the groups differ (model fields without
  'model.', other keys dotted), as variant strings write them; one group: position, scale.

  A key whose value follows from one strictly finer key's is left out: it tells the rows
  apart no further (max_len=64 on the position=learned rows of the length grid, 4096 on all
  the others, is said by position alone)."""
  keys = sorted({k for g in groups[1:] for k, _, _ in wd.differences(groups[0][0].compared,
                                                                      g[0].compared)})
  if not keys:
    keys = ["model.position", "model.scale"]
  defaults = {f"model.{k}": v for k, v in wd.as_stored(field_defaults()).items()}
  values = {k: [variant_text(g[0].compared.get(k, defaults.get(k))) for g in groups]
            for k in keys}

  def determines(a, b) -> bool:  # a's value fixes b's, over these groups
    seen = {}
    return all(seen.setdefault(x, y) == y for x, y in zip(values[a], values[b]))

  # strictly finer is a strict order, so every key left out is fixed by one that stays
  keys = [k for k in keys if not any(determines(j, k) and not determines(k, j)
                                     for j in keys if j != k)]
  return [",".join(f"{k.removeprefix('model.')}={values[k][i]}" for k in keys)
          for i in range(len(groups))]


def _check_seeds(groups) -> None:
  for group in groups:
    seen = {}
    for run in group:
      if run.seed in seen:
        raise UserError(f"{seen[run.seed].path} and {run.path} are the same run twice (the same "
                        f"config and seed {run.seed}); tabulate one of them")
      seen[run.seed] = run


def _label_values(label: str) -> dict:
  return dict(part.split("=", 1) for part in label.split(",") if "=" in part)


def _baseline_pairs(baseline: str, groups, labels) -> tuple[dict, str]:
  """--baseline -> ({row: its baseline row}, how the note names the baseline).

  A row label, or one of the table's runs (its path, or its name): every other row against
  it. Or values of some of the rows' keys (scale=standard): each row against the row that has
  those values and the row's own values of the other keys (log-n minus standard within each
  position encoding); rows without such a partner get no difference row."""
  if baseline in labels:
    return {label: baseline for label in labels if label != baseline}, baseline
  target = os.path.normpath(baseline)
  for how in (lambda r: os.path.normpath(r.path) == target,
              lambda r: r.name == os.path.basename(target)):
    found = {label for group, label in zip(groups, labels) if any(how(r) for r in group)}
    if len(found) == 1:
      base = found.pop()
      return {label: base for label in labels if label != base}, base
  wanted = _label_values(baseline)
  by_values = {tuple(sorted(_label_values(label).items())): label for label in labels}
  keys = set().union(*(_label_values(label) for label in labels))
  if wanted and "=" in baseline and set(wanted) <= keys:
    pairs = {}
    for label in labels:
      partner = by_values.get(tuple(sorted(dict(_label_values(label), **wanted).items())))
      if partner is not None and partner != label:
        pairs[label] = partner
    if pairs:
      return pairs, f"the row with {baseline} and the same other values"
  raise UserError(f"--baseline {baseline!r} is neither a row of the table ({'; '.join(labels)}), "
                  "nor one of its runs, nor values of the rows' keys that some rows share "
                  "(e.g. scale=standard)")


METRICS = {  # metric -> (title, factor, digits)
    "accuracy": ("MLM accuracy (%)", 100.0, 2),
    "loss": ("MLM loss", 1.0, 2),
    "entropy": ("Mean attention entropy (nats)", 1.0, 3),
}


def table(workdirs, *, lengths=None, metric: str = "accuracy", entropy: bool = False,
          model_override=(), baseline=None, plot=None, title=None, progress: bool = True) -> str:
  """MLM accuracy (or loss, or the mean attention entropy) by length, of workdirs or of their
  summary.json files.

  Runs that differ only in the seed are one row, 'mean ± std (n=k)' per length, labelled by
  the config values in which the rows differ; where no row has two seeds (and there is no
  baseline), one row per run. baseline (a row label, or one of the runs): one more row per
  other row, its difference from the baseline paired by seed, with a 95% Student-t interval.
  plot: also save the metric against length there (error bars: the std over seeds).
  """
  metric = "entropy" if entropy else metric
  name, factor, digits = METRICS[metric]
  suffix = f" [{', '.join(model_override)}]" if model_override else ""
  runs = [_table_run(d, lengths, entropy, model_override, progress) for d in workdirs]
  groups = seed_groups(runs)
  log_n = None
  if entropy:
    every = sorted({int(n) for r in runs for n in r.results})
    log_n = ("log n (uniform attention)", {n: math.log(n) for n in every})
  if baseline is None and all(len({r.seed for r in g}) == 1 for g in groups):
    # no seed groups: one row per run, as a single run's table
    rows = [(r.label + suffix, r.results) for r in runs]
    if plot:
      length_plot([(label, {n: [v[metric] * factor] for n, v in res.items()})
                   for label, res in rows], plot, title or f"{name} by evaluation length",
                  name, log_n)
    plain = [(log_n[0], {n: {metric: v} for n, v in log_n[1].items()})] if log_n else []
    return f"{name} by evaluation length:\n" + length_table(
        rows + plain, metric=metric, percent=factor != 1.0, digits=digits,
        refused={r.label + suffix: r.refused for r in runs})
  _check_seeds(groups)
  labels = [label + suffix for label in group_labels(groups)]
  cells = [(label, seed_cells(g, metric, factor)) for label, g in zip(labels, groups)]
  pairs, base = (_baseline_pairs(baseline, groups, labels) if baseline is not None
                 else ({}, None))
  refused = {label: set.intersection(*(set(r.refused) for r in g))
             for label, g in zip(labels, groups)}
  text, notes = seed_length_table(cells, digits=digits, baseline=pairs,
                                  plain_rows=[log_n] if log_n else (), refused=refused)
  if plot:
    length_plot([(label, {n: list(v.values()) for n, v in c.items()}) for label, c in cells],
                plot, title or f"{name} by evaluation length", f"{name}, mean ± std over seeds",
                log_n)
  head = f"{name} by evaluation length, mean ± std over seeds:\n"
  if base is not None:
    notes.insert(0, f"rows 'A - B': A's difference from B ({base}) paired by seed, mean "
                 "[95% interval, Student t with n - 1 degrees of freedom] (n pairs)")
  return head + text + ("\n\n" + "\n".join(notes) if notes else "")


def seed_cells(group, metric: str, factor: float) -> dict:
  """{length: {seed: value}} of a group's runs."""
  out = {}
  for run in group:
    for n, v in run.results.items():
      out.setdefault(int(n), {})[run.seed] = v[metric] * factor
  return out


TASK = ModuleTask.of(__name__, name="mlm", eval_options=(
    "lengths", "metric", "entropy", "model_override", "baseline", "progress"))

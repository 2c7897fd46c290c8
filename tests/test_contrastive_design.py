"""The contrastive study's controlled design: the data budget (train.epochs), the learning-rate rule, dot vs
cosine scores, steps=0 as "score the encoder as initialised", the named sweeps, and the tables
of their new axes grouped by seed.

Compared with: the budget and lr formulas written out here; InfoNCE of a 2 x 2 dot-product
matrix by hand; the steps=0 score against the MLM checkpoint's encoder embedded, mean-pooled
and ranked outside the task (numpy, scipy); the sweeps' runs written out by hand; tables of
workdirs laid out by hand (config, checkpoint directory, saved evaluation) against hand
means and stds.
"""
import json
import math
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mlm_workdirs import mlm_workdir

from configs import contrastive_batch
from data import sts
from data.sts import encode_sentences
from data.tokenizers import PAD
from model.sentence import SentenceEncoder
from objectives.contrastive import LossConfig, contrastive_loss
from training import contrastive
from training import sweep
from training import workdir as wd
from training.checkpoint import latest_step
from utils.errors import ConfigError, UserError

CONFIG = "configs/contrastive_batch.py"


def _config(variants: str):
  return contrastive_batch.get_config(variants)


# ---------------------------------------------------------------------------------------------
# The budget and the learning-rate rule

def test_epochs_give_every_batch_size_the_same_examples():
  for batch, n, epochs in [(8, 64, 3.0), (16, 64, 3.0), (16, 70, 2.0), (64, 640, 0.1)]:
    t = _config(f"epochs={epochs},batch={batch}").train
    steps = contrastive.budget_steps(t, n)
    # the fewest steps whose examples cover the budget
    assert steps * batch >= epochs * n - 1e-9 and (steps - 1) * batch < epochs * n - 1e-9
  t8, t16 = _config("epochs=3,batch=8").train, _config("epochs=3,batch=16").train
  assert contrastive.budget_steps(t8, 64) == 24 and contrastive.budget_steps(t16, 64) == 12
  assert contrastive.budget_steps(_config("epochs=0.1,batch=64").train, 640) == 1  # not 2
  assert contrastive.budget_steps(_config("steps=7,batch=64").train, 640) == 7  # epochs off


@pytest.mark.parametrize("rule,power", [("constant", 0.0), ("sqrt", 0.5), ("linear", 1.0)])
def test_learning_rate_rule_is_the_formula(rule, power):
  for batch in (8, 64, 512):
    t = _config(f"lr=2e-3,lr_rule={rule},lr_base=32,batch={batch}").train
    assert contrastive.peak_learning_rate(t) == pytest.approx(2e-3 * (batch / 32) ** power,
                                                              rel=1e-12)
  t = _config("warmup=5,warmup_fraction=0.1").train
  assert contrastive.warmup_steps(t, 87) == 9 and contrastive.warmup_steps(
      _config("warmup=5").train, 87) == 5


@pytest.mark.parametrize("variant,message", [
    ("lr_rule=cubic", "unknown train.lr_rule 'cubic'"),
    ("lr_base=0", "train.lr_base_batch must be positive"),
    ("warmup_fraction=1.5", "train.warmup_fraction must be in [0, 1)"),
    ("epochs=-1", "train.epochs must be at least 0"),
    ("steps=-1", "train.steps must be at least 0"),
    ("similarity=euclid", "unknown loss.similarity 'euclid'"),
    ("loss=amsoftmax,similarity=dot", "needs loss.similarity=cosine"),
])
def test_bad_design_options_are_refused(variant, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
    contrastive.check_config(_config("smoke," + variant))


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
  """The smoke config at half an epoch of its 64 pairs with the sqrt rule (4 steps)."""
  workdir = str(tmp_path_factory.mktemp("budget") / "run")
  # (accumulation=none: the cheapest program to compile)
  config = _config("smoke,accumulation=none,epochs=0.5,lr_rule=sqrt,lr=1e-3,warmup_fraction=0.5,"
                   "sts=")
  config.train.update(log_every=1, checkpoint_every=100)
  contrastive.train(config, workdir, progress=False)
  return workdir, config


def test_the_resolved_steps_are_recorded_and_finish_the_run(budget_run):
  workdir, config = budget_run
  assert wd.load_config(workdir).train.steps == 4 == latest_step(workdir)  # 0.5 * 64 / 8
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  # warmup 2 steps to the sqrt rule's peak, then linear decay to 0 at step 4
  peak = 1e-3 * math.sqrt(8 / 64)
  assert [r["learning_rate"] for r in rows] == pytest.approx([0, peak / 2, peak, peak / 2])
  # the user's config (train.steps at its default) is finished: its resolved steps are reached
  assert config.train.steps == 6 and contrastive.finished(workdir, config)
  assert not contrastive.finished(workdir, _config("smoke,accumulation=none,epochs=1,"
                                                   "lr_rule=sqrt,lr=1e-3,warmup_fraction=0.5,sts="))


# ---------------------------------------------------------------------------------------------
# Dot product vs cosine

def test_dot_logits_are_the_unnormalised_products_times_the_scale():
  h = jnp.array([[[1.0, 2.0], [3.0, 0.0]], [[0.0, 1.0], [2.0, 2.0]]])  # [b=2, views, D=2]
  # view 0 rows (1, 2), (0, 1) against view 1 rows (3, 0), (2, 2)
  dots = np.array([[3.0, 6.0], [0.0, 2.0]])
  norms0, norms1 = np.array([math.sqrt(5), 1.0]), np.array([3.0, math.sqrt(8)])
  for similarity, scores in [("dot", dots), ("cosine", dots / np.outer(norms0, norms1))]:
    c = LossConfig(name="infonce", scale=2.0, similarity=similarity)  # temperature 0.5
    z = 2.0 * scores
    expected = np.mean([np.log(np.exp(z[i]).sum()) - z[i, i] for i in range(2)])
    loss, _ = contrastive_loss(h, c)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# steps=0: the encoder as initialised, scored on STS

@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
  """An MLM workdir laid out as train.py leaves it (config, tokenizer, checkpoint)."""
  path = str(tmp_path_factory.mktemp("mlm") / "mlm")
  text = " ".join(sts.synthetic_sts(64, 0).sentences())
  return (path, *mlm_workdir(path, text, 3, step=5))


def test_steps_0_scores_the_pretrained_encoder(mlm_dir, tmp_path):
  path, tok, mlm_model, params = mlm_dir
  run_dir = str(tmp_path / "base")
  config = _config(f"smoke,init_from={path},steps=0,pooling=mean")
  result = contrastive.train(config, run_dir, progress=False)
  assert result.fit.step == 0 and latest_step(run_dir) == 0
  assert contrastive.finished(run_dir, config)

  # the MLM's encoder outside the task: final hidden states, mean over the valid tokens
  data = sts.synthetic_sts(64, 0)
  encoder = SentenceEncoder(mlm_model.cfg, pooling="cls")

  final_states = jax.jit(lambda p, t, v: encoder.apply({"params": p}, t, v,
                                                       method=SentenceEncoder.encode)[1])

  def embed(sentences):
    tokens = encode_sentences(tok, sentences, config.data.max_len)
    valid = tokens != PAD
    final = np.asarray(final_states({"encoder": params["encoder"]}, tokens, valid), np.float64)
    return (final * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)

  a, b = embed(data.s1), embed(data.s2)
  cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
  assert result.evaluation["spearman"] == pytest.approx(
      scipy.stats.spearmanr(cos, data.scores)[0], abs=2e-3)  # ties: test_contrastive_train

  # whitening on the run: every dimension, fitted on a separate sentence file; k > width refused
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(sts.synthetic_pairs(80, 7).sentences()) + "\n")
  white = contrastive.evaluate(run_dir, whitening_k=0, whitening_corpus=str(corpus))
  assert white["name"] == "synthetic:whitenall@corpus.txt" and white["step"] == 0
  # by hand: (x - mean) U diag(1 / sqrt(eigenvalues)) of the corpus embeddings' covariance
  fit_on = embed(sts.synthetic_pairs(80, 7).sentences())
  mu = fit_on.mean(0)
  values, vectors = np.linalg.eigh(np.cov(fit_on - mu, rowvar=False))
  w = vectors / np.sqrt(values + 1e-9)
  wa, wb = (a - mu) @ w, (b - mu) @ w
  cos = (wa * wb).sum(1) / (np.linalg.norm(wa, axis=1) * np.linalg.norm(wb, axis=1))
  assert white["spearman"] == pytest.approx(scipy.stats.spearmanr(cos, data.scores)[0], abs=2e-3)
  assert abs(white["spearman"] - result.evaluation["spearman"]) > 0.01
  width = mlm_model.cfg.width
  with pytest.raises(UserError, match=rf"whitening keeps k in \[1, {width}\] dimensions"):
    contrastive.evaluate(run_dir, whitening_k=width + 1)


# ---------------------------------------------------------------------------------------------
# The named sweeps

def test_the_named_sweeps_written_out(tmp_path):
  seeds = (0, 1, 2)
  batches = (8, 16, 32, 64, 128, 256, 512)
  expected = {
      "base": ["steps=0,pooling=cls", "steps=0,pooling=mean", "steps=0,pooling=first_last_mean"],
      "batch": [f"budget,loss={loss},batch={b},seed={s}" for s in seeds
                for loss in ("infonce", "flatnce") for b in batches],
      "temperature": [f"budget,batch=64,{v},seed={s}" for s in seeds for v in
                      ["temperature=0.001", "temperature=0.01", "temperature=0.05",
                       "temperature=0.1", "temperature=1", "similarity=dot,temperature=1"]],
      "accumulation": [f"budget,micro=16,accumulation={m},batch={b},seed={s}" for s in seeds
                       for m in ("exact", "naive") for b in (128, 256, 512, 1024)],
      "unsup": [f"budget,signal=simcse,train_format=sentences,epochs=1.0,loss={loss},batch=64,"
                f"seed={s}" for s in seeds for loss in ("infonce", "flatnce")],
  }
  assert contrastive_batch.sweeps() == expected
  points = sweep.plan(f"{CONFIG}:lr=3e-3", str(tmp_path), "", [], "batch")
  t = points[0].config.train
  assert (t.epochs, t.lr_rule, t.warmup_fraction, t.learning_rate) == (5.0, "sqrt", 0.1, 3e-3)
  # a key=value of the command overrides the budget flag's
  assert sweep.plan(f"{CONFIG}:epochs=2", str(tmp_path), "", [],
                    "batch")[0].config.train.epochs == 2.0
  for name in expected:
    for p in sweep.plan(CONFIG, str(tmp_path), "smoke", ["seed=0"], name):
      contrastive.check_config(p.config)
  dot = [p for p in sweep.plan(CONFIG, str(tmp_path), "", ["similarity=dot"], "temperature")]
  assert [p.config.loss.temperature for p in dot] == [1.0] * 3


# ---------------------------------------------------------------------------------------------
# Tables of the new axes, grouped by seed

def _fake_run(root, name, variants, spearman, steps):
  """A finished workdir laid out by hand: config.json, a checkpoint directory at the resolved
  steps, and the saved end-of-run evaluation for that step."""
  path = os.path.join(root, name)
  config = contrastive.with_budget(_config(variants), 64) if "epochs" in variants else _config(
      variants)
  assert config.train.steps == steps
  wd.prepare(path, config)
  os.makedirs(os.path.join(path, "checkpoints", str(steps)))
  result = {"step": steps, "sts": "synthetic", "split": "", "whitening_k": None,
            "whitening_corpus": "", "pairs": 1000, "spearman": spearman / 100}
  with open(os.path.join(path, "sts_eval.json"), "w") as f:
    json.dump({"synthetic": result}, f)
  return path


def _line(stdout, prefix):
  return next(line for line in stdout.splitlines() if line.startswith(prefix))


def _ms(values):
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def test_temperature_table_groups_seeds_with_tau_as_columns(tmp_path):
  values = {(0.01, "cosine"): [60, 64], (0.1, "cosine"): [50, 51], (1.0, "dot"): [40, 43]}
  dirs = [_fake_run(str(tmp_path), f"t{tau}_{sim}_{s}",
                    f"temperature={tau},similarity={sim},seed={s}", v, 200)
          for (tau, sim), vs in values.items() for s, v in enumerate(vs)]
  text = contrastive.table(dirs, plot=str(tmp_path / "tau.png"))
  assert "mean ± std over seeds (columns: temperature):" in text
  assert _line(text, "| loss") == "| loss | accumulation | similarity | 0.01 | 0.1 | 1.0 |"
  assert _line(text, "| infonce | none | cosine") == (
      f"| infonce | none | cosine | {_ms([60, 64])} | {_ms([50, 51])} | - |")
  assert _line(text, "| infonce | none | dot") == f"| infonce | none | dot | - | - | {_ms([40, 43])} |"
  assert os.path.getsize(tmp_path / "tau.png") > 0


def test_a_run_from_before_the_design_options_is_the_same_run(tmp_path):
  """Its config.json lacks the new keys: resuming, finished() and the table treat it as the
  same run as one with each option off."""
  dirs = [_fake_run(str(tmp_path), f"s{s}", f"seed={s}", v, 200) for s, v in enumerate([50, 52])]
  path = os.path.join(dirs[0], "config.json")
  old = json.load(open(path))
  for section, key in [("loss", "similarity"), ("train", "epochs"), ("train", "lr_rule"),
                       ("train", "lr_base_batch"), ("train", "warmup_fraction")]:
    del old[section][key]
  with open(path, "w") as f:
    json.dump(old, f)
  assert wd.config_changes(old, wd.config_to_dict(_config("seed=0"))) == ([], [])
  assert contrastive.finished(dirs[0], _config("seed=0"))
  assert _line(contrastive.table(dirs), "| infonce") == f"| infonce | none | {_ms([50, 52])} |"
  # a run with an option on is another run
  assert wd.config_changes(old, wd.config_to_dict(_config("seed=0,similarity=dot")))[1]


def test_budget_table_groups_seeds_by_batch_and_names_the_resolved_steps(tmp_path):
  runs = [("infonce", 8, [30, 32]), ("infonce", 16, [40, 41]), ("flatnce", 16, [42, 46])]
  dirs = [_fake_run(str(tmp_path), f"{loss}_{b}_{s}",
                    f"loss={loss},batch={b},epochs=2,lr_rule=sqrt,seed={s}", v, 128 // b)
          for loss, b, vs in runs for s, v in enumerate(vs)]
  text = contrastive.table(dirs)
  assert _line(text, "| loss") == "| loss | accumulation | 8 | 16 |"
  assert _line(text, "| infonce") == f"| infonce | none | {_ms([30, 32])} | {_ms([40, 41])} |"
  assert _line(text, "| flatnce") == f"| flatnce | none | - | {_ms([42, 46])} |"
  lr8, lr16 = 3e-4 * math.sqrt(8 / 64), 3e-4 * math.sqrt(16 / 64)
  assert _line(text, "updates") == (f"updates and peak learning rate: batch_size 8: 16 steps, lr "
                                    f"{lr8:.3g}, batch_size 16: 8 steps, lr {lr16:.3g}")
  # a supervised and an unsupervised run side by side: labelled rows, not one cell
  dirs.append(_fake_run(str(tmp_path), "unsup", "signal=simcse,batch=16,epochs=2,lr_rule=sqrt",
                        20, 8))
  assert _line(contrastive.table(dirs), "| infonce | none | simcse") == (
      "| infonce | none | simcse | - | 20.0 (n=1) |")

"""The contrastive task end to end: the smoke config through train.py and evaluate.py."""
import itertools
import json
import os

import jax
import numpy as np
import pytest
import scipy.stats
from entry_points import call_main, metric_rows, run
from pins import check

from configs import contrastive_batch, mlm_extrapolation
from data import sts
from data.sts import encode_sentences
from data.tokenizers import PAD
from training import contrastive
from training import workdir as wd
from utils.errors import ConfigError


def _run(*args):
  return run(*args, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The smoke config with FlatNCE, trained through train.py: (workdir, train.py's output)."""
  workdir = str(tmp_path_factory.mktemp("contrastive") / "run")
  out = _run("train.py", "--config", "configs/contrastive_batch.py:smoke,loss=flatnce",
             "--workdir", workdir, "--noprogress")
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir, out


# The synthetic set has pairs of identical sentences (cosine 1, gold score 5): whether such
# cosines tie exactly or differ in their last bit depends on the compiled kernels (jitted or
# not, matmul precision, XLA flags), and Spearman counts a tie and a one-ulp difference
# differently. Measured: up to 3e-4 apart; 2e-3 still fails on a wrong
# model, set or projection. Sets without such pairs agree to rounding.
TIES = 2e-3


def _recomputed_spearman(workdir, data):
  """Spearman of the run's cosine similarities, recomputed outside evaluation/: the whole set
  embedded in one batch by the model itself, cosines in numpy, the rank correlation by scipy."""
  run = contrastive.TASK.load(workdir)
  n = run.config.data.max_len

  def embed(sentences):
    tokens = encode_sentences(run.tokenizer, sentences, n)
    return np.asarray(run.model.apply({"params": run.params}, tokens, tokens != PAD,
                                      project=run.config.sentence.eval_projection), np.float64)

  a, b = embed(data.s1), embed(data.s2)
  cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
  return scipy.stats.spearmanr(cos, data.scores)[0]


def test_smoke_config_trains_and_evaluates_its_configured_sts(trained, capsys):
  workdir, out = trained
  assert "STS Spearman x100 on synthetic (64 pairs), step 6:" in out.stdout
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["step"] == 6 and all(np.isfinite(r["loss"]) for r in rows)
  evaluation = json.load(open(os.path.join(workdir, "sts_eval.json")))
  # the smoke run is pinned: its metrics and evaluation (tests/pins.py)
  check("smoke_contrastive_batch.json", {"metrics": metric_rows(workdir),
                                         "evaluation": evaluation})
  saved = evaluation["synthetic"]
  config = _config("smoke")
  expected = _recomputed_spearman(workdir, sts.synthetic_sts(config.data.synthetic.num_eval,
                                                             config.data.synthetic.seed))
  assert saved["step"] == 6 and saved["spearman"] == pytest.approx(expected, abs=TIES)
  # evaluate.py with no option: the run's own evaluation (eval.sts), in one line, the same
  # program on the same checkpoint as at the end of training (evaluate.py's main in this
  # process: its refusals below run as a user's command)
  os.remove(os.path.join(workdir, "sts_eval.json"))
  capsys.readouterr()
  assert call_main("evaluate", "--workdir", workdir) == 0
  assert capsys.readouterr().out == (f"{workdir}: STS Spearman x100 on synthetic (64 pairs), "
                                     f"step 6: {100 * saved['spearman']:.2f}\n")
  assert json.load(open(os.path.join(workdir, "sts_eval.json")))["synthetic"] == saved


def test_evaluate_another_sts_file(trained, tmp_path, capsys):
  workdir, _ = trained
  # evaluate.py on an STS file in the plain format
  sts_file = tmp_path / "sts.tsv"
  sts_file.write_text("the cat eats an apple\tthe kitten eats a fruit\t5\n"
                      "a dog finds the ball\tthe chef sells a hat\t0\n"
                      "the man cleans the car\ta guy washes the car\t4.5\n"
                      "the king hides the key\tthe bird paints a boat\t0.5\n", encoding="utf-8")
  capsys.readouterr()
  assert call_main("evaluate", "--workdir", workdir, "--sts", str(sts_file)) == 0
  assert "STS Spearman x100 on sts.tsv (4 pairs), step 6:" in capsys.readouterr().out
  saved = json.load(open(os.path.join(workdir, "sts_eval.json")))
  assert {"synthetic", "sts.tsv"} <= set(saved)
  expected = _recomputed_spearman(workdir, sts.read_sts(str(sts_file)))
  assert saved["sts.tsv"]["spearman"] == pytest.approx(expected, abs=1e-9)
  # a malformed STS file is one line on stderr and exit code 2
  bad = tmp_path / "bad.tsv"
  bad.write_text("a\tb\t1\nno tabs here\n", encoding="utf-8")
  out = _run("evaluate.py", "--workdir", workdir, "--sts", str(bad), "--whitening_k", "4")
  assert out.returncode == 2 and out.stderr.strip().startswith("error:")
  assert "bad.tsv:2:" in out.stderr


def test_options_of_the_other_task_and_mixed_tables_are_refused(trained, tmp_path):
  workdir, _ = trained
  out = _run("evaluate.py", "--workdir", workdir, "--lengths", "64,128")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.startswith("error: --lengths is not an option of the contrastive task")
  assert "--sts" in out.stderr
  mlm_dir = tmp_path / "mlm"  # only its config.json is read before the refusal
  wd.prepare(str(mlm_dir), mlm_extrapolation.get_config("smoke"))
  out = _run("evaluate.py", "--workdirs", workdir, str(mlm_dir), "--table")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "mix tasks ['contrastive', 'mlm']" in out.stderr and len(out.stderr.splitlines()) == 1


def _config(variant="smoke"):
  return contrastive_batch.get_config(variant)


@pytest.mark.parametrize("variant,message", [
    ("smoke,loss=nce", "valid names"),
    ("smoke,accumulation=sum", "valid names"),
    ("smoke,batch=12,micro=8", "multiple of the micro-batch"),
    ("smoke,signal=unsup", "valid names"),
    ("smoke,pooling=max", "valid names"),
    ("smoke,init_from=/nonexistent/mlm", "not a directory"),
])
def test_bad_configs_are_refused_before_anything_runs(variant, message):
  with pytest.raises(ConfigError, match=message):
    contrastive.check_config(_config(variant))


def test_sweep_covers_the_study():
  runs = contrastive_batch.sweep()
  assert len(set(runs)) == len(runs)
  fields = [dict(p.split("=") for p in r.split(",")) for r in runs]
  points = {(f["loss"], int(f["batch"]), int(f["seed"])) for f in fields}
  assert points == set(itertools.product(contrastive_batch.LOSSES, contrastive_batch.BATCH_SIZES,
                                         contrastive_batch.SEEDS))
  micro = _config("").train.micro_batch
  for f in fields:  # where a batch spans several micro-batches, every mode is in the study
    if int(f["batch"]) > micro:
      assert {g["accumulation"] for g in fields if (g["loss"], g["batch"], g["seed"]) ==
              (f["loss"], f["batch"], f["seed"])} == set(contrastive_batch.MODES)
  for r in runs[:3]:
    contrastive.check_config(_config("smoke," + r.replace("batch=", "steps=1,batch=")))


def test_init_from_an_mlm_workdir_loads_its_encoder(tmp_path):
  """An MLM workdir (config, tokenizer, checkpoint) -> the sentence encoder starts from it."""
  from mlm_workdirs import mlm_workdir

  mlm_dir = str(tmp_path / "mlm")
  tok, model, params = mlm_workdir(mlm_dir, "the cat eats an apple, a dog finds the ball", 5)

  config = _config(f"smoke,init_from={mlm_dir},projection=8,signal=simbert,pairing=all")
  contrastive.check_config(config)
  run_dir = str(tmp_path / "run")
  os.makedirs(run_dir)
  pairs = contrastive.training_pairs(config)
  tok2, model_cfg, pretrained = contrastive.prepare_model(config, run_dir, pairs)
  assert tok2.vocab == tok.vocab and model_cfg == model.cfg  # the MLM's tokenizer and shape
  sentence = contrastive.sentence_model(config, model_cfg)
  fresh = jax.jit(lambda k: contrastive.init_params(sentence, k, 16))(jax.random.PRNGKey(0))
  merged = contrastive.merge_pretrained(fresh, pretrained)
  same = jax.tree_util.tree_map(np.array_equal, merged["encoder"], params["encoder"])
  assert all(jax.tree_util.tree_leaves(same))
  for name in ("head_dense", "head_norm", "output_bias"):  # simbert keeps the MLM head too
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        np.array_equal, merged[name], params[name])))
  assert "project" in merged and "project" not in params  # the projection starts fresh

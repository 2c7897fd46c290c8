"""The contrastive task end to end: the smoke config through train.py and evaluate.py --sts."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import contrastive_batch
from training import contrastive
from utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# unoptimised XLA code compiles several times faster; these runs are tiny
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=300)


def test_smoke_config_trains_and_evaluates(tmp_path):
  workdir = str(tmp_path / "run")
  out = _run("train.py", "--config", "configs/contrastive_batch.py:smoke,loss=flatnce",
             "--workdir", workdir, "--noprogress")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "STS Spearman x100 on synthetic" in out.stdout
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["step"] == 6 and all(np.isfinite(r["loss"]) for r in rows)
  assert rows[-1]["loss"] == pytest.approx(1.0)  # FlatNCE's value is 1 by construction
  # evaluate.py on an STS file in the plain format, with and without whitening
  sts_file = tmp_path / "sts.tsv"
  sts_file.write_text("the cat eats an apple\tthe kitten eats a fruit\t5\n"
                      "a dog finds the ball\tthe chef sells a hat\t0\n"
                      "the man cleans the car\ta guy washes the car\t4.5\n"
                      "the king hides the key\tthe bird paints a boat\t0.5\n", encoding="utf-8")
  out = _run("evaluate.py", "--workdir", workdir, "--sts", str(sts_file))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "STS Spearman x100 on sts.tsv (4 pairs), step 6:" in out.stdout
  saved = json.load(open(os.path.join(workdir, "sts_eval.json")))
  assert set(saved) == {"synthetic", "sts.tsv"}
  assert -1.0 <= saved["sts.tsv"]["spearman"] <= 1.0
  # a malformed STS file is one line on stderr and exit code 2
  bad = tmp_path / "bad.tsv"
  bad.write_text("a\tb\t1\nno tabs here\n", encoding="utf-8")
  out = _run("evaluate.py", "--workdir", workdir, "--sts", str(bad), "--whitening_k", "4")
  assert out.returncode == 2 and out.stderr.strip().startswith("error:")
  assert "bad.tsv:2:" in out.stderr


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
  assert len(runs) == 7 * 2 * 3 * 2 and len(set(runs)) == len(runs)
  for r in runs[:3]:
    contrastive.check_config(_config("smoke," + r.replace("batch=", "steps=1,batch=")))


def test_init_from_an_mlm_workdir_loads_its_encoder(tmp_path):
  """An MLM workdir (config, tokenizer, checkpoint) -> the sentence encoder starts from it."""
  from configs import mlm_extrapolation
  from data.tokenizers import CharTokenizer
  from model.encoder import MlmModel
  from training import mlm, workdir as wd
  from training.checkpoint import Checkpointer
  from training.optimizer import make_optimizer
  from training.state import TrainState

  mlm_dir = str(tmp_path / "mlm")
  mlm_cfg = mlm_extrapolation.get_config("smoke")
  wd.prepare(mlm_dir, mlm_cfg)
  tok = CharTokenizer.train(["the cat eats an apple, a dog finds the ball"])
  tok.save(mlm_dir)
  model = MlmModel(mlm.model_config(mlm_cfg, tok.vocab_size))
  params = jax.jit(lambda k: mlm.init_params(model, k, 16))(jax.random.PRNGKey(5))
  ckpt = Checkpointer(mlm_dir, async_save=False)
  ckpt.save(3, TrainState.create(params, make_optimizer(mlm_cfg.train)), force=True)
  ckpt.close()

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

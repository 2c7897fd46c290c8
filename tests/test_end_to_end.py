"""The user's path through the real entry points: train, stop, resume, evaluate, tabulate."""
import json
import os

import pytest
from entry_points import call_main
from entry_points import metric_rows as metrics
from entry_points import run
from pins import check

from training import mlm

CONFIG = "configs/mlm_extrapolation.py"


def test_train_stop_resume_evaluate(tmp_path, capsys):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  # preempted after 4 of 6 steps (a checkpoint at 3 by checkpoint_every, one at 4 on stopping)
  p = run("train.py", f"--config={CONFIG}:smoke", f"--workdir={a}", "--stop_after=4",
          "--progress=false")
  assert "Rerun the same command to resume" in p.stderr
  assert not os.path.exists(os.path.join(a, "eval.json"))
  p = run("train.py", f"--config={CONFIG}:smoke", f"--workdir={a}", "--progress=false")
  assert "| a (rope, logn) |" not in p.stdout and "| 32 | 64 |" in p.stdout
  # an uninterrupted twin sees the same batches, masks and dropout: identical metrics
  run("train.py", f"--config={CONFIG}:smoke", f"--workdir={b}", "--progress=false")
  assert metrics(a) == metrics(b)
  assert [m["step"] for m in metrics(a)] == [2, 4, 6]
  with open(os.path.join(a, "eval.json")) as f, open(os.path.join(b, "eval.json")) as g:
    ea, eb = json.load(f), json.load(g)
  assert ea == eb and ea["step"] == 6 and set(ea["lengths"]) == {"32", "64"}
  # the uninterrupted smoke run is pinned: its metrics and evaluation (tests/pins.py)
  check("smoke_mlm_extrapolation.json", {"metrics": metrics(b), "evaluation": eb})
  # evaluate.py re-scores from the checkpoint and gets the same numbers (its main in this
  # process: the subprocess's start-up is what train.py's runs and the refusal below test)
  os.remove(os.path.join(a, "eval.json"))
  assert call_main("evaluate", f"--workdir={a}") == 0
  with open(os.path.join(a, "eval.json")) as f:
    assert json.load(f)["lengths"] == ea["lengths"]
  # the same checkpoint evaluated with the standard scale instead of log-n: its own file,
  # different numbers, eval.json untouched
  assert call_main("evaluate", f"--workdir={a}", "--model_override=scale=standard") == 0
  with open(os.path.join(a, "eval_scale-standard.json")) as f:
    std = json.load(f)["lengths"]
  assert std.keys() == ea["lengths"].keys()
  assert all(std[n]["loss"] != ea["lengths"][n]["loss"] for n in std)
  # the inference-time RoPE methods on the trained run (training length 32): dynamic NTK is
  # plain RoPE up to it, logn_qwen the standard scale, and both change length 64; YaRN
  # rescales every length (one through evaluate.py's flags, the other two through the task)
  assert call_main("evaluate", f"--workdir={a}", "--model_override=rope_scaling=dynamic_ntk",
                   "--model_override=rope_scaling_factor=4") == 0
  with open(os.path.join(a, "eval_rope_scaling-dynamic_ntk_rope_scaling_factor-4.json")) as f:
    dyn = json.load(f)["lengths"]
  qwen = mlm.TASK.evaluate(a, model_override=["scale=logn_qwen"], progress=False)["lengths"]
  yarn = mlm.TASK.evaluate(a, lengths=[64], progress=False,
                           model_override=["rope_scaling=yarn", "rope_scaling_factor=4"])
  assert dyn["32"] == ea["lengths"]["32"] and dyn["64"]["loss"] != ea["lengths"]["64"]["loss"]
  assert qwen["32"] == std["32"] and qwen["64"]["loss"] != std["64"]["loss"]
  assert yarn["lengths"]["64"]["loss"] != ea["lengths"]["64"]["loss"]
  capsys.readouterr()
  assert call_main("evaluate", "--workdirs", a, b, "--table") == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| a ") or
          line.startswith("| b ")]
  assert len(rows) == 2 and rows[0].split("|")[2:] == rows[1].split("|")[2:]
  # an option of the contrastive task is refused, naming this run's task
  p = run("evaluate.py", f"--workdir={a}", "--sts=synthetic", check=False)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert p.stderr.startswith("error: --sts is not an option of the mlm task")


def test_learned_positions_refuse_long_lengths_in_one_line(tmp_path, capsys):
  # the MLM config's learned table is the training length (32 in smoke); the end-of-run
  # evaluation at 32 and 64 scores 32 and records 64 as refused, and so does the entropy
  w = str(tmp_path / "learned")
  p = run("train.py", f"--config={CONFIG}:smoke,position=learned,entropy=true", f"--workdir={w}",
          "--progress=false")
  assert "cannot encode lengths [64] (at most 32)" in p.stderr and "Traceback" not in p.stderr
  assert "| 32 | 64 |" in p.stdout and "| refused |" in p.stdout
  with open(os.path.join(w, "summary.json")) as f:
    summary = json.load(f)
  assert summary["config"]["model"]["max_len"] == 32 and summary["refused"] == [64]
  assert set(summary["lengths"]) == set(summary["entropy"]) == {"32"}
  assert mlm.finished(w)
  os.remove(os.path.join(w, "entropy.json"))  # eval.entropy asks for it: not finished without
  assert not mlm.finished(w)
  capsys.readouterr()
  assert call_main("evaluate", f"--workdir={w}", "--lengths=32,256") == 0
  out, err = capsys.readouterr()
  assert "cannot encode lengths [256]" in err and "Traceback" not in err
  assert '"32"' in out and '"256"' not in out


@pytest.mark.parametrize("args, message", [
    ([f"--config={CONFIG}:smoke,scale=bogus"], "valid names"),
    ([f"--config={CONFIG}:smoke,bogus=1"], "valid keys"),
    ([f"--config={CONFIG}:smoke,corpus=does/not/exist.txt"], "does not exist"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
  p = run("train.py", *args, f"--workdir={tmp_path / 'w'}", check=False)
  assert p.returncode != 0
  assert message in p.stderr and "Traceback" not in p.stderr, p.stderr

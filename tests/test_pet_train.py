"""The PET task end to end: the smoke config through train.py fine-tunes a fresh model on 8
sentences per label of the synthetic task, evaluate.py's main scores it again (accuracy
recomputed here from the MLM's logits), and a bad verbalizer, a label the verbalizer lacks or
too few examples for the shots are refused before the workdir is written."""
import os

import entry_points
import jax
import numpy as np
import pytest
from entry_points import run

from configs import pet as pet_config
from data import sentiment
from data.corpus import DataError
from data.tokenizers import CLS, MASK, PAD, SEP
from training import pet as pet_task
from utils.errors import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The smoke config trained through train.py: (workdir, train.py's output)."""
  workdir = str(tmp_path_factory.mktemp("pet") / "run")
  out = run("train.py", "--config", "configs/pet.py:smoke", "--workdir", workdir,
            "--noprogress", check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir, out


def test_smoke_run_learns_the_synthetic_task_from_8_shots(trained):
  workdir, out = trained
  saved = pet_task.evaluate(workdir)  # the end-of-run result, reused
  assert saved["step"] == 60 and saved["examples"] == 200 and saved["shots"] == "8-shot"
  assert saved["accuracy"] > 0.9, saved
  assert out.stdout == (f"PET accuracy x100 on synthetic (200 examples, 8-shot), step 60: "
                        f"{100 * saved['accuracy']:.2f}\n")
  # recomputed: the MLM's full logits at every position, the slot read by looking for [MASK],
  # each word's log-probability from a log-softmax of its own
  loaded = pet_task.load(workdir)
  config = loaded.config
  valid = sentiment.synthetic_examples(config.data.synthetic.num_valid,
                                       config.data.synthetic.seed + 1)
  tok = loaded.tokenizer
  tokens = np.full((len(valid), config.data.max_len), PAD, np.int32)
  for i, e in enumerate(valid):
    ids = [CLS, MASK] + tok.encode("满意。" + e.text) + [SEP]
    tokens[i, :len(ids)] = ids
  logits = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params}, tokens,
                                                  tokens != PAD), np.float64)
  slot = logits[np.arange(len(valid)), np.argmax(tokens == MASK, axis=1)]
  top = slot.max(-1, keepdims=True)
  logp = slot - top - np.log(np.exp(slot - top).sum(-1, keepdims=True))
  words = [tok.encode(w)[0] for w in sentiment.WORDS]
  predicted = np.argmax(logp[:, words], axis=1)
  gold = np.array([sentiment.LABELS.index(e.label) for e in valid])
  assert saved["correct"] == int(np.sum(predicted == gold))
  assert pet_task.TASK.finished(workdir)


def test_evaluate_py_scores_the_workdir_again_and_tabulates(trained, capsys):
  workdir, out = trained
  saved = pet_task.evaluate(workdir)
  os.remove(os.path.join(workdir, pet_task.EVAL_FILE))
  assert entry_points.call_main("evaluate", "--workdir", workdir) == 0
  assert capsys.readouterr().out == f"{workdir}: {out.stdout}"
  assert pet_task.evaluate(workdir) == saved  # written again, and now reused
  text = pet_task.TASK.table([workdir, workdir])
  assert text.startswith("PET accuracy x100 on synthetic, mean ± std over seeds:")
  # the same run twice is one row of two identical values
  assert f"| 8-shot | {100 * saved['accuracy']:.2f} ± 0.00 |" in text


def test_refusals_come_before_the_workdir_is_written(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    pet_task.train(pet_config.get_config("smoke,words=不满+很"), str(workdir))
  assert str(e.value) == ("verbalizer word '不满' of label 'negative' is 2 tokens but "
                          "pet.pattern has 1 [MASK] slot; give every label a word of 1 token")
  train = tmp_path / "train.tsv"
  train.write_text("好\tnegative\n差\tpositive\n还行\tneutral\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"train.tsv:3: label 'neutral' is not one of pet.labels"):
    pet_task.train(pet_config.get_config(f"smoke,train={train},valid={train},format=tsv"),
                   str(workdir))
  train.write_text("好\tnegative\n差\tpositive\n", encoding="utf-8")
  with pytest.raises(DataError, match="label 'negative' has 1 examples, fewer than "
                     "pet.shots=8"):
    pet_task.train(pet_config.get_config(f"smoke,train={train},valid={train},format=tsv"),
                   str(workdir))
  assert not workdir.exists()


def test_sweep_is_three_shot_counts_at_three_seeds():
  entries = pet_config.sweep().entries()
  assert entries[:3] == ["shots=2,seed=0", "shots=8,seed=0", "shots=32,seed=0"]
  assert len(entries) == 9
  for entry in entries:
    pet_task.check_config(pet_config.get_config(entry))

"""The NER task end to end: the smoke config through train.py learns the synthetic nested-entity
set, evaluate.py's main scores it again, the F1 is recomputed outside evaluation/, and bad configs
and files are refused before anything is written."""
import os

import entry_points
import jax
import numpy as np
import pytest
from entry_points import run

from configs import ner_globalpointer
from data import ner
from data.corpus import DataError
from data.tokenizers import PAD
from training import ner as ner_task
from utils.errors import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The smoke config trained through train.py: (workdir, train.py's output)."""
  workdir = str(tmp_path_factory.mktemp("ner") / "run")
  out = run("train.py", "--config", "configs/ner_globalpointer.py:smoke", "--workdir", workdir,
            "--noprogress", check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir, out


def _recomputed(workdir):
  """(gold, predicted) entity sets of the validation sentences: the model applied to the
  whole set at once, every positive score read by a loop over (type, i, j)."""
  loaded = ner_task.TASK.load(workdir)
  config, types = loaded.config, loaded.data["types"]
  s = config.data.synthetic
  valid = ner.synthetic_sentences(s.num_valid, s.seed + 1)
  tokens = ner.encode(valid, loaded.tokenizer, types, config.data.max_len)["tokens"]
  scores = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params}, tokens,
                                                  tokens != PAD, ner.spannable(tokens)))
  predicted = []
  for row, sentence in zip(scores, valid):
    found = set()
    for t in range(len(types)):
      for i in range(1, len(sentence.text) + 1):  # characters are tokens 1 ... len
        for j in range(i, len(sentence.text) + 1):
          if row[t, i, j] > 0:
            found.add((types[t], i - 1, j - 1))
    predicted.append(found)
  return [set(x.entities) for x in valid], predicted


def test_smoke_run_learns_the_nested_synthetic_set(trained):
  workdir, out = trained
  saved = ner_task.evaluate(workdir)  # the end-of-run result, reused
  assert saved["step"] == 200 and saved["sentences"] == 200
  assert saved["f1"] > 0.95, saved
  assert out.stdout == (f"entity F1 x100 on synthetic (200 sentences, {saved['gold']} "
                        f"entities), step 200: {100 * saved['f1']:.2f} (precision "
                        f"{100 * saved['precision']:.2f}, recall {100 * saved['recall']:.2f})\n")
  gold, predicted = _recomputed(workdir)
  correct = sum(len(g & p) for g, p in zip(gold, predicted))
  assert (saved["gold"], saved["predicted"], saved["correct"]) == (
      sum(map(len, gold)), sum(map(len, predicted)), correct)
  # nested pairs are found, not only flat entities
  nested = sum(1 for g, p in zip(gold, predicted) for e in g & p if e[0] == "ORG" and any(
      o[0] != "ORG" and o[1] == e[1] for o in g & p))
  assert nested > 20
  assert ner_task.TASK.finished(workdir)


def test_evaluate_py_scores_the_workdir_again_and_tabulates(trained, capsys):
  workdir, out = trained
  saved = ner_task.evaluate(workdir)
  # evaluate.py's main with its flags, in this process (a subprocess would add seconds of
  # start-up to the same code): it loads the checkpoint and scores it again, in train.py's words
  os.remove(os.path.join(workdir, ner_task.EVAL_FILE))
  assert entry_points.call_main("evaluate", "--workdir", workdir) == 0
  assert capsys.readouterr().out == f"{workdir}: {out.stdout}"
  assert ner_task.evaluate(workdir) == saved  # written again, and now reused
  text = ner_task.TASK.table([workdir, workdir])
  assert "Entity scores x100 on synthetic" in text
  # the same run twice is one row of two identical values
  assert f"| head=globalpointer | {100 * saved['f1']:.2f} ± 0.00 |" in text


@pytest.mark.parametrize("variant, what", [
    ("head=pointer", "unknown ner.head 'pointer'"),
    ("head_size=7", "ner.head_size must be a positive even number"),
    ("format=conll", "unknown data.format 'conll'"),
    ("train=x.bio", "both `synthetic` or both files"),
    ("max_len=2", "data.max_len=2 leaves no room"),
])
def test_bad_configs_are_refused_in_one_line(variant, what):
  with pytest.raises(ConfigError) as e:
    ner_task.check_config(ner_globalpointer.get_config(f"smoke,{variant}"))
  assert what in str(e.value) and "\n" not in str(e.value)
  config = ner_globalpointer.get_config("smoke")
  config.data.tokenizer = "wordpiece"
  with pytest.raises(ConfigError, match="the tokenizer must be char"):
    ner_task.check_config(config)


def test_a_bad_file_is_refused_before_the_workdir_is_written(tmp_path):
  good, bad = tmp_path / "train.bio", tmp_path / "valid.bio"
  good.write_text("北 B-LOC\n京 I-LOC\n", encoding="utf-8")
  bad.write_text("北 B-LOC\n京 S-LOC\n", encoding="utf-8")
  workdir = tmp_path / "run"
  config = ner_globalpointer.get_config(f"smoke,train={good},valid={bad}")
  with pytest.raises(DataError, match=r"valid.bio:2: tag 'S-LOC' is not BIO"):
    ner_task.TASK.train(config, str(workdir))
  assert not workdir.exists()


def test_sweep_is_both_heads_at_three_seeds():
  entries = ner_globalpointer.sweep().entries()
  assert entries[:2] == ["head=globalpointer,seed=0", "head=efficient,seed=0"]
  assert len(entries) == 6
  for entry in entries:
    ner_task.check_config(ner_globalpointer.get_config(entry))

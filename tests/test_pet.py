"""PET's pieces in process: label scores and losses against independent formulas, the pattern's
tokens and slots, the files, the K-shot sample, one-line refusals, and the synthetic task's
zero-shot case: a tiny MLM pretrained on the review corpus predicts the verbalizer word."""
import json

import jax
import numpy as np
import pytest

from configs import mlm_extrapolation
from configs import pet as pet_config
from data import pet, sentiment
from data.corpus import DataError
from data.tokenizers import CLS, MASK, PAD, SEP, UNK, CharTokenizer
from model.config import ModelConfig
from model.encoder import MlmModel
from objectives.mlm import mlm_loss
from objectives.pet import label_scores, pet_loss
from training import mlm
from training import pet as pet_task
from utils.errors import ConfigError


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _case(seed=0, b=5, s=2, v=11, c=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, s, v)).astype(np.float32) * 3
  verbalizer = np.stack([rng.choice(np.arange(5, v), s, replace=False) for _ in range(c)])
  labels = rng.integers(c, size=b).astype(np.int32)
  return logits, verbalizer.astype(np.int32), labels


def test_label_scores_are_the_summed_log_probabilities_of_each_word():
  logits, verbalizer, _ = _case()
  got = np.asarray(label_scores(logits, verbalizer))
  logp = _log_softmax(logits)
  want = np.array([[sum(logp[b, s, verbalizer[c, s]] for s in range(verbalizer.shape[1]))
                    for c in range(len(verbalizer))] for b in range(len(logits))])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # each word's probability: the product over its slots
  probs = np.exp(logp)
  np.testing.assert_allclose(np.exp(got[1, 2]), probs[1, 0, verbalizer[2, 0]] *
                             probs[1, 1, verbalizer[2, 1]], rtol=1e-5)


def test_the_mlm_loss_is_the_masked_lm_cross_entropy_at_the_slots():
  logits, verbalizer, labels = _case(1)
  value, sums = pet_loss(logits, verbalizer, labels, "mlm")
  # the project's MLM loss with the gold word's tokens as the slots' targets
  want, _ = mlm_loss(logits, verbalizer[labels], np.ones(verbalizer[labels].shape, np.float32))
  np.testing.assert_allclose(float(value), float(want), rtol=1e-5)
  scores = np.asarray(label_scores(logits, verbalizer))
  assert int(sums["correct"]) == int(np.sum(scores.argmax(-1) == labels))


def test_the_labels_loss_is_cross_entropy_over_the_label_scores():
  logits, verbalizer, labels = _case(2)
  value, _ = pet_loss(logits, verbalizer, labels, "labels")
  scores = np.asarray(label_scores(logits, verbalizer), np.float64)
  want = -np.mean(_log_softmax(scores)[np.arange(len(labels)), labels])
  np.testing.assert_allclose(float(value), want, rtol=1e-5)


TOK = CharTokenizer.train(["很不满意。", "好差"] + [sentiment.sentence(np.random.default_rng(0), l)
                                              for l in sentiment.LABELS])


def test_encode_puts_the_pattern_around_the_text_and_finds_the_slots():
  text = "好差好差好差"
  tokens, slots = pet.encode(TOK, [text, "好"], "[MASK]满意。{text}", 12)
  assert tokens.shape == (2, 12) and slots.tolist() == [[1], [1]]
  # [CLS] [MASK] 满 意 。 text... [SEP]: the text cut to 12 - 2 - 4 = 6 tokens
  assert tokens[0].tolist() == [CLS, MASK, *TOK.encode("满意。"), *TOK.encode(text), SEP]
  assert tokens[1].tolist() == [CLS, MASK, *TOK.encode("满意。好"), SEP] + [PAD] * 5
  # slots after the text move with its length; two slots, one on each side of it
  tokens, slots = pet.encode(TOK, ["好差", "好差好差好差好差"], "[MASK]:{text}。[MASK]意", 10)
  for row, slot in zip(tokens, slots):
    assert row[slot].tolist() == [MASK, MASK]
    assert np.sum(row == MASK) == 2
  # room for 10 - 2 - 5 = 3 tokens of text: [CLS] [MASK] : t t t 。 [MASK] 意 [SEP]
  assert slots.tolist() == [[1, 6], [1, 7]]
  assert tokens[1].tolist()[-1] == SEP


def test_verbalizer_tokens_and_the_refusals_of_words():
  ids = pet.verbalizer_ids(TOK, ["neg", "pos"], ["不", "很"], "[MASK]满意。{text}")
  assert ids.tolist() == [TOK.encode("不"), TOK.encode("很")]
  two = pet.verbalizer_ids(TOK, ["neg", "pos"], ["不满", "很满"], "[MASK][MASK]意。{text}")
  assert two.shape == (2, 2)
  for words, pattern, what in [
      (["不满", "很"], "[MASK]满意。{text}",
       "verbalizer word '不满' of label 'neg' is 2 tokens but pet.pattern has 1 [MASK] slot"),
      (["不", "赞"], "[MASK]满意。{text}", "verbalizer word '赞' of label 'pos' is not in"),
      (["很", "很"], "[MASK]满意。{text}", "labels 'neg' and 'pos' have the same verbalizer"),
      (["不", "很"], "[MASK]满意。", "must hold {text} once and [MASK] at least once"),
  ]:
    with pytest.raises(ConfigError) as e:
      pet.verbalizer_ids(TOK, ["neg", "pos"], words, pattern)
    assert what in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="leaves no room for the text in data.max_len=6"):
    pet.encode(TOK, ["好"], "[MASK]满意。{text}", 6)
  assert TOK.encode("赞") == [UNK]


def test_files_are_read_and_bad_lines_refused_in_one_line(tmp_path):
  good = tmp_path / "a.jsonl"
  good.write_text('{"text": "好好", "label": 1}\n\n{"text": " 差 ", "label": "0"}\n',
                  encoding="utf-8")
  assert [(e.text, e.label, e.line) for e in pet.read_examples(str(good), "jsonl")] == [
      ("好好", "1", 1), ("差", "0", 3)]
  tsv = tmp_path / "a.tsv"
  tsv.write_text("好\t好\tpos\n差\tneg\n", encoding="utf-8")  # the label is after the last tab
  assert [(e.text, e.label) for e in pet.read_examples(str(tsv), "tsv")] == [
      ("好\t好", "pos"), ("差", "neg")]
  cases = [("jsonl", '{"text": "x", "label": 1}\n{"text": "y"}\n', "b.jsonl:2: no 'label'"),
           ("jsonl", "{oops\n", "b.jsonl:1: not valid JSON"),
           ("tsv", "x\tpos\ny\n", "b.tsv:2: expected `text<TAB>label`, found no tab")]
  for fmt, text, what in cases:
    bad = tmp_path / f"b.{fmt}"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
      pet.read_examples(str(bad), fmt)
    assert what in str(e.value) and "\n" not in str(e.value)
  # unlabelled texts may lack the label
  assert [e.label for e in pet.read_examples(str(bad), "tsv", labeled=False)] == ["pos", None]
  with pytest.raises(DataError) as e:
    pet.check_labels(pet.read_examples(str(tsv), "tsv"), ["neg", "positive"], str(tsv))
  assert str(e.value) == (f"{tsv}:1: label 'pos' is not one of pet.labels ['neg', "
                          "'positive']; add it to pet.labels with its word in pet.words")


def test_shots_are_k_per_label_drawn_with_the_seed():
  exs = sentiment.synthetic_examples(40, 0)
  a = pet.sample_shots(exs, sentiment.LABELS, 3, seed=0)
  assert [e.label for e in a] == ["negative"] * 3 + ["positive"] * 3
  assert len(set(a)) == 6 and set(a) <= set(exs)
  assert a == pet.sample_shots(exs, sentiment.LABELS, 3, seed=0)
  assert a != pet.sample_shots(exs, sentiment.LABELS, 3, seed=1)
  assert pet.sample_shots(exs, sentiment.LABELS, 0, seed=0) == exs
  with pytest.raises(DataError, match="label 'negative' has 20 examples, fewer than "
                     "pet.shots=21"):
    pet.sample_shots(exs, sentiment.LABELS, 21, seed=0, source="train.jsonl")


def test_synthetic_task_labels_follow_the_symbol_sets():
  for e in sentiment.synthetic_examples(50, 4):
    own = set(sentiment.POSITIVE_SYMBOLS if e.label == "positive" else
              sentiment.NEGATIVE_SYMBOLS)
    assert set(e.text) <= own | set(sentiment.NEUTRAL_SYMBOLS) and set(e.text) & own
  docs = sentiment.review_corpus(20, 0)
  assert all(d[:4] in ("很满意。", "不满意。") for d in docs)
  assert all((d[0] == "很") == bool(set(d[4:]) & set(sentiment.POSITIVE_SYMBOLS)) for d in docs)


@pytest.mark.parametrize("variant, what", [
    ("loss=hinge", "unknown pet.loss 'hinge'"),
    ("pattern=[MASK]满意", "must hold {text} once"),
    ("words=不+很+好", "must be lists of the same length"),
    ("format=csv", "unknown data.format 'csv'"),
    ("shots=-1", "pet.shots must be at least 0"),
    ("train=a.jsonl", "all `synthetic` or all files"),
    ("train=,steps=5", "data.train is empty"),
    ("init_from=/nonexistent/mlm", "is not a directory"),
])
def test_bad_configs_are_refused_in_one_line(variant, what):
  with pytest.raises(ConfigError) as e:
    pet_task.check_config(pet_config.get_config(f"smoke,{variant}"))
  assert what in str(e.value) and "\n" not in str(e.value)


def test_the_unlabeled_mlm_loss_adds_to_the_slots_loss():
  config = pet_config.get_config("smoke,unlabeled=synthetic,unlabeled_weight=0.5")
  model = MlmModel(ModelConfig.for_run(config.model.to_dict(), vocab_size=TOK.vocab_size,
                                       train_length=16))
  params = jax.jit(lambda key: mlm.init_params(model, key, 16))(jax.random.PRNGKey(0))
  verbalizer = pet.verbalizer_ids(TOK, sentiment.LABELS, sentiment.WORDS, sentiment.PATTERN)
  exs = sentiment.synthetic_examples(4, 0)
  tokens, slots = pet.encode(TOK, [e.text for e in exs], sentiment.PATTERN, 16)
  labels = np.asarray([sentiment.LABELS.index(e.label) for e in exs], np.int32)
  batch = {"tokens": tokens, "slots": slots, "labels": labels, "unlabeled": tokens}
  key = jax.random.PRNGKey(3)

  @jax.jit
  def losses(params, batch):
    tokens = batch["tokens"]
    value, metrics = pet_task.loss_fn(config, model, verbalizer)(params, batch, key)
    # the slots' loss of these logits, and the MLM task's own loss of the texts with the key
    # the PET loss hands it (dropout is 0: the logits are the deterministic ones)
    logits = model.apply({"params": params}, tokens, tokens != PAD, targets_at=batch["slots"])
    alone, _ = pet_loss(logits, verbalizer, labels, "mlm")
    extra, _ = mlm.mlm_loss_fn(model, config.data.mask_rate)(params, tokens,
                                                              jax.random.split(key)[1])
    return value, metrics, alone, extra

  value, metrics, alone, extra = losses(params, batch)
  np.testing.assert_allclose(float(value), float(alone) + 0.5 * float(extra), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["mlm_loss"]), float(extra), rtol=1e-5)


def test_zero_shot_an_mlm_pretrained_on_the_reviews_picks_the_right_word(tmp_path):
  """A tiny MLM trained in process on the review corpus (the verbalizer words before their
  sentences) scores the evaluation sentences zero-shot, well above chance."""
  config = mlm_extrapolation.get_config(
      "smoke,corpus=reviews,steps=60,length=32,batch=32,lr=1e-2,warmup=10,width=32,mlp=64")
  config.model.dropout = 0.0
  config.data.mask_rate = 0.3  # the slot is masked more often: fewer steps
  config.eval.at_end = False
  config.train.update(checkpoint_every=1000, log_every=1000)
  mlm_dir = str(tmp_path / "mlm")
  mlm.train(config, mlm_dir, progress=False)
  workdir = str(tmp_path / "zero")
  result = pet_task.train(pet_config.get_config(f"init_from={mlm_dir},zero"), workdir,
                          progress=False)
  e = result.evaluation
  assert e["step"] == 0 and e["shots"] == "zero-shot" and e["examples"] == 1000
  assert e["accuracy"] > 0.8, e
  # both labels are predicted (not one label for every sentence)
  assert all(v["correct"] > 0.6 * v["examples"] for v in e["per_label"].values()), e
  # the workdir's checkpoint is the MLM untouched
  loaded = pet_task.load(workdir)
  pretrained = mlm.load(mlm_dir)
  same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), loaded.params,
                                pretrained.params)
  assert all(jax.tree_util.tree_leaves(same))
  with open(f"{workdir}/pet_model.json") as f:
    assert json.load(f)["verbalizer"] == [pretrained.tokenizer.encode(w) for w in
                                          sentiment.WORDS]


def test_fewer_shots_than_a_batch_make_every_step_take_all_of_them():
  config = pet_config.get_config("smoke,shots=2,unlabeled=synthetic,unlabeled_batch=3")
  config.data.synthetic.num_unlabeled = 10
  data = pet_task.read_data(config)
  assert [e.label for e in data.train] == ["negative"] * 2 + ["positive"] * 2
  assert pet_task.labeled_batch(config, data) == 4 < config.train.batch_size
  batches = pet_task.Batches(config, TOK, data)
  for step in range(3):
    batch = batches.batch(step)
    assert batch["tokens"].shape == (4, config.data.max_len) and batch["unlabeled"].shape[0] == 3
    assert sorted(batch["labels"].tolist()) == [0, 0, 1, 1]
    # the unlabelled texts are [CLS] text [SEP], no pattern, no slot
    assert not np.any(batch["unlabeled"] == MASK) and np.all(batch["unlabeled"][:, 0] == CLS)

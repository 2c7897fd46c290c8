"""Corpus reading and splitting, tokenizers, packing, batches, and MLM masking statistics."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data import synthetic
from data.corpus import DataError, load_documents, split_documents
from data.mlm import TrainBatches, eval_sequences, mlm_mask, num_predictions, pack
from data.tokenizers import MASK, NUM_SPECIAL, SEP, CharTokenizer, WordPieceTokenizer


def _data_cfg(**kw):
  c = ml_collections.ConfigDict(dict(corpus="synthetic", format="text", doc_separator="line",
                                     text_field="text", encoding_errors="strict",
                                     synthetic=dict(num_docs=10, doc_len=200, vocab=50,
                                                    repeat_prob=0.5, seed=0)))
  c.update(kw)
  return c


def test_synthetic_is_deterministic_and_has_repeats():
  a = synthetic.generate(num_docs=5, doc_len=500, vocab=100, seed=3)
  assert a == synthetic.generate(num_docs=5, doc_len=500, vocab=100, seed=3)
  assert a != synthetic.generate(num_docs=5, doc_len=500, vocab=100, seed=4)
  # repeated spans: most 12-grams recur within their document far more than chance allows
  doc = a[0]
  grams = [doc[i:i + 12] for i in range(len(doc) - 12)]
  assert len(set(grams)) < 0.8 * len(grams)
  no_repeat = synthetic.generate(num_docs=1, doc_len=500, vocab=100, repeat_prob=0.0, seed=3)[0]
  grams = [no_repeat[i:i + 12] for i in range(len(no_repeat) - 12)]
  assert len(set(grams)) > 0.95 * len(grams)


def test_text_and_jsonl_corpora(tmp_path):
  (tmp_path / "a.txt").write_text("first doc\nsecond doc\n\n", encoding="utf-8")
  (tmp_path / "b.txt").write_text("para one\nstill one\n\npara two\n", encoding="utf-8")
  assert load_documents(_data_cfg(corpus=str(tmp_path / "a.txt"))) == ["first doc", "second doc"]
  assert load_documents(_data_cfg(corpus=str(tmp_path / "b.txt"), doc_separator="blank_line")) \
      == ["para one\nstill one", "para two"]
  assert len(load_documents(_data_cfg(corpus=str(tmp_path / "*.txt")))) == 5
  (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x y"}) + "\n" +
                                    json.dumps({"body": "z"}) + "\n", encoding="utf-8")
  assert load_documents(_data_cfg(corpus=str(tmp_path / "c.jsonl"), format="jsonl",
                                  text_field="body")) == ["x y", "z"]
  with pytest.raises(DataError, match=r"c.jsonl:1: .*'text'"):
    load_documents(_data_cfg(corpus=str(tmp_path / "c.jsonl"), format="jsonl"))


@pytest.mark.parametrize("suffix, compress", [
    (".gz", "gzip"), (".bz2", "bz2"), (".xz", "lzma")])
def test_compressed_corpora_read_as_their_text(tmp_path, suffix, compress):
  import importlib
  module = importlib.import_module(compress)
  text = "第一回 甄士隐\nsecond doc ü\n"
  path = tmp_path / f"c.txt{suffix}"
  path.write_bytes(module.compress(text.encode("utf-8")))
  assert load_documents(_data_cfg(corpus=str(path))) == ["第一回 甄士隐", "second doc ü"]
  # a truncated archive is refused in one line, never read in part
  path.write_bytes(module.compress(text.encode("utf-8") * 50)[:-8])
  with pytest.raises(DataError, match=r"c.txt\.\w+: not a complete \w+ file"):
    load_documents(_data_cfg(corpus=str(path)))


def test_bad_corpora_are_refused_with_the_file_and_position(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    load_documents(_data_cfg(corpus=str(tmp_path / "missing.txt")))
  with pytest.raises(DataError, match="matches no files"):
    load_documents(_data_cfg(corpus=str(tmp_path / "*.none")))
  (tmp_path / "empty.txt").write_bytes(b"")
  with pytest.raises(DataError, match="empty"):
    load_documents(_data_cfg(corpus=str(tmp_path / "empty.txt")))
  (tmp_path / "bad.txt").write_bytes("ok text ".encode() + b"\xff\xfe more")
  with pytest.raises(DataError, match="byte offset 8"):
    load_documents(_data_cfg(corpus=str(tmp_path / "bad.txt")))
  docs = load_documents(_data_cfg(corpus=str(tmp_path / "bad.txt"), encoding_errors="replace"))
  assert "\ufffd" in docs[0]


def test_split_is_by_document_disjoint_and_deterministic():
  docs = [f"doc{i}" for i in range(200)]
  train, valid = split_documents(docs, 0.1, seed=0)
  assert not set(train) & set(valid)
  assert sorted(train + valid) == sorted(docs)
  assert 10 <= len(valid) <= 30
  assert split_documents(docs, 0.1, seed=0) == (train, valid)
  # contiguous blocks keep consecutive documents together in validation
  idx = sorted(int(d[3:]) for d in valid)
  # (5 blocks of 4 documents: at most 4 breaks among 19 neighbours)
  assert sum(b - a == 1 for a, b in zip(idx, idx[1:])) >= len(idx) - 1 - 4


def test_char_tokenizer_round_trip(tmp_path):
  docs = ["红楼梦 第一回", "甄士隐梦幻识通灵\n新行", "abc"]
  tok = CharTokenizer.train(docs)
  for d in docs:
    assert tok.decode(tok.encode(d)) == d
  tok.save(str(tmp_path))
  again = CharTokenizer.load(str(tmp_path))
  assert again.vocab == tok.vocab
  assert tok.encode("?")[0] == 1  # unseen character -> [UNK]


def test_wordpiece_round_trip(tmp_path):
  docs = ["the quick brown fox jumps over the lazy dog"] * 20 + ["a fox is quick"] * 20
  tok = WordPieceTokenizer.train(docs, vocab_size=120)
  text = "the quick fox jumps"
  assert tok.decode(tok.encode(text)) == text
  tok.save(str(tmp_path))
  assert WordPieceTokenizer.load(str(tmp_path)).encode(text) == tok.encode(text)
  assert tok.tok.token_to_id("[MASK]") == MASK


def test_batches_are_a_function_of_the_step():
  stream = np.arange(1000, dtype=np.int32)
  b = TrainBatches(stream, length=10, batch_size=4, seed=1)
  again = TrainBatches(stream, length=10, batch_size=4, seed=1)
  for step in (0, 5, 30, 31):  # 30+ crosses into the second epoch
    np.testing.assert_array_equal(b.batch(step), again.batch(step))
  # within an epoch every sequence is drawn once: no duplicates among the first per_epoch
  starts = np.concatenate([b.batch(s)[:, 0] for s in range(b.per_epoch // 4)])
  assert len(set(starts.tolist())) == len(starts)
  assert all(np.all(np.diff(row) == 1) for row in b.batch(3))  # contiguous text
  with pytest.raises(DataError, match="too few"):
    TrainBatches(np.arange(15, dtype=np.int32), length=10, batch_size=1, seed=0)


def test_pack_and_eval_sequences():
  s = pack([[5, 6], [7]])
  np.testing.assert_array_equal(s, [5, 6, SEP, 7, SEP])
  seqs = eval_sequences(np.arange(100, dtype=np.int32), 16, max_tokens=40)
  assert seqs.shape == (2, 16)
  with pytest.raises(DataError, match="fewer than one evaluation sequence"):
    eval_sequences(np.arange(10, dtype=np.int32), 16, max_tokens=100)


def test_masking_statistics():
  vocab, n = 1000, 200
  tokens = jax.random.randint(jax.random.PRNGKey(0), (256, n), NUM_SPECIAL, vocab)
  inputs, pos, targets, weights = mlm_mask(jax.random.PRNGKey(1), tokens, vocab_size=vocab)
  p = num_predictions(n, 0.15)
  assert pos.shape == (256, p) and p == 30
  # positions distinct within a row, targets are the original tokens there
  assert all(len(set(r.tolist())) == p for r in np.asarray(pos))
  np.testing.assert_array_equal(targets, jnp.take_along_axis(tokens, pos, 1))
  at = np.asarray(jnp.take_along_axis(inputs, pos, 1))
  tg = np.asarray(targets)
  frac_mask = np.mean(at == MASK)
  frac_keep = np.mean(at == tg)
  frac_rand = 1 - frac_mask - frac_keep
  total = at.size  # 7680 predictions: binomial std of a fraction ~0.005
  assert abs(frac_mask - 0.8) < 0.02 and abs(frac_rand - 0.1) < 0.015, (frac_mask, frac_rand)
  assert abs(frac_keep - 0.1 - 0.1 / vocab) < 0.015 and total == 7680
  # outside the picked positions nothing changes (a count bound would pass a change moved to a
  # neighbouring position)
  picked = np.zeros(tokens.shape, bool)
  np.put_along_axis(picked, np.asarray(pos), True, axis=1)
  np.testing.assert_array_equal(np.asarray(inputs)[~picked], np.asarray(tokens)[~picked])
  # specials and padding are never picked when enough normal tokens exist
  padded = tokens.at[:, 150:].set(0)
  _, pos2, _, w2 = mlm_mask(jax.random.PRNGKey(2), padded, vocab_size=vocab)
  assert int(pos2.max()) < 150 and float(w2.min()) == 1.0
  # a row with too few maskable tokens gets weight 0 on the picks that fell on padding
  short = tokens.at[:, 10:].set(0)
  _, _, _, w3 = mlm_mask(jax.random.PRNGKey(3), short, vocab_size=vocab)
  np.testing.assert_array_equal(np.asarray(w3).sum(1), 10)


def test_the_shipped_text_is_intact_and_read_by_name():
  """corpus=hongloumeng: the xz file in data/texts/ decompresses to the novel's text (its
  SHA-256 recorded when it was added), split into its paragraphs."""
  import hashlib
  import os

  from data import corpus
  path = corpus.resolve_paths("hongloumeng")[0]
  assert os.path.dirname(path) == corpus.TEXTS_DIR
  raw = corpus.read_bytes(path)
  assert hashlib.sha256(raw).hexdigest() == SHIPPED_SHA256
  docs = load_documents(_data_cfg(corpus="hongloumeng"))
  assert len(docs) == 2998 and docs[0].startswith("第一回")


SHIPPED_SHA256 = "0f7876dad2ea61a49b789e4a9112c4a14b1b133b308e61038bde24a4a2ce396d"

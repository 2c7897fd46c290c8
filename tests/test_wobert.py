"""tokenizer=wobert (data/tokenizers.py): jieba words in the vocabulary kept whole, the rest
split into characters; the vocabulary builder's order and size; the saved vocabulary; an MLM
workdir trained and loaded with it.

The expected tokens are written by hand. They rest on jieba's cuts of the test sentences,
which each test first asserts (jieba's dictionary decides them, pinned through pyproject), so
a different dictionary fails there, naming the cut, rather than in the tokenizer's checks.
"""
import json
import os

import pytest

from entry_points import run

from configs import mlm_extrapolation
from data.corpus import load_documents, split_documents
from data.tokenizers import (NUM_SPECIAL, SPECIALS, UNK, WobertTokenizer, build_tokenizer,
                             load_tokenizer, segment)
from training import mlm
from training import workdir as wd
from utils.errors import ConfigError

CONFIG = "configs/mlm_extrapolation.py"

# jieba's cut of each sentence (HMM=False), as the tests rely on it
CUTS = {
    "我们喜欢手机。": ["我们", "喜欢", "手机", "。"],
    "林妹妹来了，宝玉说：“好。”": ["林妹妹", "来", "了", "，", "宝玉", "说", "：", "“", "好",
                         "。", "”"],
    "我有3个apple手机，2020年": ["我", "有", "3", "个", "apple", "手机", "，", "2020", "年"],
    # 杭研 is no dictionary word: jieba's HMM would guess it, WoBERT's cut (HMM=False) does not
    "他来到了网易杭研大厦": ["他", "来到", "了", "网易", "杭", "研", "大厦"],
}
VOCAB = [*SPECIALS, "我", "们", "喜", "欢", "手", "机", "。", "，", "林", "妹", "来", "了", "宝", "玉",
         "说", "：", "“", "”", "有", "3", "个", "a", "p", "l", "e", "2", "0", "年",
         "我们", "手机", "宝玉", "apple"]


@pytest.fixture(scope="module")
def tok():
  return WobertTokenizer(VOCAB)


def test_jieba_cuts_the_test_sentences_as_the_tests_assume():
  for text, words in CUTS.items():
    assert segment(text) == words, text


def _tokens(tok, text):
  return [tok.vocab[i] for i in tok.encode(text)]


def test_words_in_the_vocabulary_stay_whole_others_become_characters(tok):
  # 喜欢 is not in the vocabulary: its characters; 我们 and 手机 are: one token each
  assert _tokens(tok, "我们喜欢手机。") == ["我们", "喜", "欢", "手机", "。"]
  # 林妹妹 (one jieba word) is not: three characters; 好 is no character of the vocabulary
  assert tok.encode("林妹妹来了，宝玉说：“好。”")[:3] == [tok.index["林"], tok.index["妹"],
                                                  tok.index["妹"]]
  assert _tokens(tok, "林妹妹来了，宝玉说：“好。”") == [
      "林", "妹", "妹", "来", "了", "，", "宝玉", "说", "：", "“", "[UNK]", "。", "”"]
  assert tok.encode("好")[0] == UNK


def test_latin_words_and_digits_in_chinese_text(tok):
  # apple is a vocabulary word; 2020 is not, so its digits
  assert _tokens(tok, "我有3个apple手机，2020年") == [
      "我", "有", "3", "个", "apple", "手机", "，", "2", "0", "2", "0", "年"]
  # a word of the vocabulary inside a longer Latin run is not found: jieba's word is the run
  assert _tokens(tok, "apples")[:5] == ["a", "p", "p", "l", "e"]


def test_decode_inverts_encode_without_unknown_characters(tok):
  text = "我有3个apple手机，我们喜欢手机。"
  assert tok.decode(tok.encode(text)) == text


DOCS = ["我们喜欢手机。", "我们喜欢手机。", "林妹妹来了，宝玉说：“好。”", "宝玉说：“我们好。”"]


def _by_hand():
  """DOCS' vocabulary written out: characters by count (ties by code point), then the
  multi-character words by count (ties in string order)."""
  counts = {}
  for d in DOCS:
    for c in d:
      counts[c] = counts.get(c, 0) + 1
  # 我 们 。 4 (我们 twice and 我们 once more, 。 in every doc); 好 说 宝 玉 ： “ ” 2; ...
  assert counts["。"] == 4 and counts["们"] == 3 and counts["好"] == 2 and counts["林"] == 1
  chars = sorted(counts, key=lambda c: (-counts[c], c))
  assert chars[:3] == ["。", "们", "我"]  # ord: 。 U+3002 < 们 U+4EEC < 我 U+6211
  # 我们 3, 喜欢 2, 手机 2, 宝玉 2, 林妹妹 1; 喜欢 < 宝玉 < 手机 by code point (U+559C, U+5B9D,
  # U+624B)
  words = ["我们", "喜欢", "宝玉", "手机", "林妹妹"]
  return chars, words


def test_vocabulary_order_and_size():
  for d in DOCS[:3]:
    assert segment(d) == CUTS.get(d, segment(d))
  assert segment(DOCS[3]) == ["宝玉", "说", "：", "“", "我们", "好", "。", "”"]
  chars, words = _by_hand()
  full = WobertTokenizer.train(DOCS)
  assert full.vocab == [*SPECIALS, *chars, *words]
  base = NUM_SPECIAL + len(chars)
  # the size counts every token: the first words by count fill what the characters leave
  assert WobertTokenizer.train(DOCS, size=base + 2).vocab == [*SPECIALS, *chars, "我们", "喜欢"]
  assert WobertTokenizer.train(DOCS, size=base).vocab == [*SPECIALS, *chars]
  assert WobertTokenizer.train(DOCS, size=base + 100).vocab == full.vocab  # all there are
  # min_count drops characters (to [UNK]), not words
  rare = WobertTokenizer.train(DOCS, min_count=2)
  assert "林" not in rare.index and "林妹妹" in rare.index
  assert rare.encode("林")[0] == UNK
  with pytest.raises(ConfigError) as e:
    WobertTokenizer.train(DOCS, size=base - 1)
  assert str(e.value) == (f"data.vocab_size={base - 1} is smaller than tokenizer=wobert's "
                          f"{base} special tokens and characters; use at least {base} (or "
                          "raise data.min_count to keep fewer characters)")


def test_build_from_the_data_section_save_and_load(tmp_path):
  data = mlm_extrapolation.get_config("tokenizer=wobert").data
  assert data.tokenizer == "wobert"
  built = build_tokenizer(data, DOCS)
  assert built.vocab == WobertTokenizer.train(DOCS).vocab
  built.save(str(tmp_path))
  loaded = load_tokenizer("wobert", str(tmp_path))
  assert type(loaded) is WobertTokenizer and loaded.vocab == built.vocab
  text = "宝玉说：“我们喜欢apple手机！”"
  assert loaded.encode(text) == built.encode(text)


SMOKE_VOCAB = 133  # the smoke run's synthetic vocabulary: the same shapes, so the compiled
# programs of tests/test_end_to_end.py's smoke runs are reused from the session's cache


def test_an_mlm_workdir_trains_saves_and_loads_the_wobert_vocabulary(tmp_path):
  # 80 chapters' paragraphs of the shipped novel; min_count=20 keeps 96 characters, so the
  # vocabulary has room for 32 words
  docs = load_documents(mlm_extrapolation.get_config().data)[:80]
  corpus = tmp_path / "zh.txt"
  corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
  w = str(tmp_path / "run")
  p = run("train.py", f"--config={CONFIG}:smoke,tokenizer=wobert,corpus={corpus},"
          f"vocab={SMOKE_VOCAB}", "--config.data.min_count=20", f"--workdir={w}",
          "--progress=false")
  assert "prefix dict" not in p.stderr  # jieba's dictionary load is not announced
  config = wd.load_config(w)
  assert config.data.tokenizer == "wobert"
  saved = [json.loads(line) for line in open(os.path.join(w, "vocab.txt"), encoding="utf-8")]
  data = mlm.prepare_data(config)  # the tokenizer built again from the same training split
  assert saved == data.tokenizer.vocab and len(saved) == SMOKE_VOCAB
  assert saved[NUM_SPECIAL + 95] != saved[NUM_SPECIAL + 96] and len(saved[-1]) > 1  # words
  # the words made the token stream shorter than the text
  train_chars = sum(len(d) for d in split_documents(docs, config.data.valid_fraction,
                                                    config.data.split_seed)[0])
  assert len(data.train_stream) < train_chars
  loaded = mlm.load(w, with_params=False)
  assert type(loaded.tokenizer) is WobertTokenizer and loaded.tokenizer.vocab == saved
  evaluation = json.load(open(os.path.join(w, "eval.json")))
  assert evaluation["step"] == config.train.steps and len(evaluation["lengths"]) == 2

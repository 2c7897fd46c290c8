"""The WordPiece tokenizer of a BERT vocab.txt splits text exactly as HF's BertTokenizerFast.

Built as the converter builds it (interop/convert.py: vocab.txt in a BERT layout, [UNK] ...
[MASK] after [unused] rows, and the settings of tokenizer_config.json), on mixed Chinese,
English and punctuation, with accents, characters the vocabulary lacks, a word just within
and one just past max_input_chars_per_word (100), and each lower-casing setting; then saved
into a workdir and loaded back, as evaluation and training load it.
"""
import json

import pytest

transformers = pytest.importorskip("transformers")

from data.tokenizers import SPECIALS, WordPieceTokenizer  # noqa: E402
from interop.convert import checkpoint_tokenizer  # noqa: E402

WORDS = (["[PAD]"] + [f"[unused{i}]" for i in range(1, 4)] + ["[UNK]", "[CLS]", "[SEP]",
                                                               "[MASK]"] +
         list("的一是了人我在有他这中大来上国，。、！？：“”（）") +
         ["hello", "world", "play", "##ing", "##s", "##ed", "un", "##believ", "##able", "cafe",
          "café", "Café", "naive", "naïve", "Hello", "New", "York", "a", "##a", "x", "##y",
          ",", ".", "!", "?", "'", "-", "(", ")", "2024", "##5", "1", "的一", "##一"])
TEXTS = [
    "我在New York，playing 的一 cafe!",
    "Hello, world! unbelievable PLAYS played—naïve Café (2024) 2025?",
    "他说：“这是一个大国。”  他来了！  ",
    "a" * 100 + " " + "a" * 101 + " xy xyy",  # 100 characters are split, 101 are [UNK]
    "emoji 😀 and 龘 unknown [MASK] here\t\tand\nlines\u00a0nbsp\u200bzero width",
    "Ｆｕｌｌ width ＡＢＣ and combining e\u0301 accents",
]
SETTINGS = [
    {"do_lower_case": True},
    {"do_lower_case": False},
    {"do_lower_case": True, "strip_accents": False},
    {"do_lower_case": False, "strip_accents": True},
    {"do_lower_case": True, "tokenize_chinese_chars": False},
]


def _checkpoint_dir(tmp_path, settings):
  (tmp_path / "vocab.txt").write_text("".join(f"{w}\n" for w in WORDS), encoding="utf-8")
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
  return str(tmp_path)


def _tokens(tok, text):
  vocab = tok.vocab
  return [vocab[i] for i in tok.encode(text)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in
                                                                       s.items()))
def test_wordpiece_of_a_vocab_splits_as_bert_tokenizer_fast(tmp_path, settings):
  (tmp_path / "hf").mkdir()
  directory = _checkpoint_dir(tmp_path / "hf", settings)
  ours, perm, _ = checkpoint_tokenizer(directory, len(WORDS))
  theirs = transformers.BertTokenizerFast.from_pretrained(directory)
  assert type(theirs).__name__ == "BertTokenizerFast"
  # our ids put the specials at 0-4; perm maps each of our ids to the vocab.txt row
  assert ours.vocab[:len(SPECIALS)] == list(SPECIALS)
  assert [WORDS[i] for i in perm] == ours.vocab
  ours.save(str(tmp_path))
  loaded = WordPieceTokenizer.load(str(tmp_path))
  for text in TEXTS:
    want = theirs.tokenize(text)
    assert _tokens(ours, text) == want, text
    assert [perm[i] for i in ours.encode(text)] == theirs.convert_tokens_to_ids(want)
    assert loaded.encode(text) == ours.encode(text)
  # the texts do reach the cases they are for
  if settings == {"do_lower_case": True}:
    tokens = [t for text in TEXTS for t in theirs.tokenize(text)]
    assert {"[UNK]", "naive", "##ing", "[MASK]", "，"} <= set(tokens)
    assert tokens.count("##a") == 99

"""Tokenizers: character-level (the right choice for Chinese), WoBERT's word level, WordPiece.

All share the special tokens below, at the same ids, so the MLM code never special-cases a
tokenizer. Each saves itself into the workdir, so evaluation uses exactly the training vocabulary.
"""
from __future__ import annotations

import collections
import functools
import json
import logging
import os

from utils.errors import ConfigError
from utils.files import atomic_write_text

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIALS))
NUM_SPECIAL = len(SPECIALS)


def read_vocab(path: str) -> list[str]:
  """The tokens of a vocab.txt, one per line, in file order (lines end at a newline only,
  as BERT's loader reads them; str.splitlines would also split at U+2028 and the like)."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  return lines[:-1] if lines and lines[-1] == "" else lines


def vocab_order(words) -> list[str]:
  """A vocabulary in this codebase's id order: SPECIALS at their ids (added if absent), then
  the other tokens in their given order (a BERT vocab.txt has [PAD] at 0 but [UNK] ... [MASK]
  at 100 ...)."""
  twice = sorted(w for w, n in collections.Counter(words).items() if n > 1)
  if twice:
    raise ConfigError(f"the vocabulary lists {twice[:3]} more than once; each token must be "
                      "on one line")
  return list(SPECIALS) + [w for w in words if w not in SPECIALS]


def frequent(counts, min_count: int = 1) -> list[str]:
  """The keys seen at least min_count times, most frequent first, ties in string order (for
  characters, code point order): deterministic."""
  return sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))


class CharTokenizer:
  """One token per Unicode character; vocabulary built from the training split."""
  kind = "char"

  def __init__(self, vocab: list[str]):
    if tuple(vocab[:NUM_SPECIAL]) != SPECIALS:
      raise ConfigError(f"vocabulary must start with the special tokens {SPECIALS}")
    self.vocab = list(vocab)
    self.index = {t: i for i, t in enumerate(self.vocab)}

  @classmethod
  def train(cls, docs, min_count: int = 1, max_size: int = 0):
    chars = frequent(collections.Counter(c for d in docs for c in d), min_count)
    if max_size:
      chars = chars[:max(0, max_size - NUM_SPECIAL)]
    return cls(list(SPECIALS) + chars)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, text: str) -> list[int]:
    get = self.index.get
    return [get(c, UNK) for c in text]

  def decode(self, ids) -> str:
    return "".join(self.vocab[i] for i in ids if i >= NUM_SPECIAL or i == UNK)

  def save(self, workdir: str) -> None:
    atomic_write_text(os.path.join(workdir, "vocab.txt"),
                  "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in self.vocab))

  @classmethod
  def load(cls, workdir: str):
    with open(os.path.join(workdir, "vocab.txt"), encoding="utf-8") as f:
      return cls([json.loads(line) for line in f])  # JSON per line: '\n' and ' ' survive


@functools.cache
def jieba_segmenter():
  """A jieba Tokenizer with its dictionary loaded, once per process. jieba announces the
  dictionary load on stderr through its logger: silenced here, warnings kept."""
  import jieba
  jieba.setLogLevel(logging.WARNING)
  segmenter = jieba.Tokenizer()
  segmenter.initialize()
  return segmenter


def segment(text: str) -> list[str]:
  """jieba's words of text, as WoBERT cuts it: the dictionary's maximum-probability path,
  without the HMM that guesses words the dictionary lacks (HMM=False), so a word is always
  one the dictionary knows, a run of Latin letters or digits, or a single character."""
  return list(jieba_segmenter().cut(text, HMM=False))


class WobertTokenizer(CharTokenizer):
  """WoBERT's word-level Chinese tokenizer (docs/techniques.md section 9): jieba segments the
  text; a word in the vocabulary is one token, any other word is split into characters, each
  its own token or [UNK] (the char tokenizer's rule).

  The vocabulary is the specials, every character of the training split (min_count applies),
  then jieba's most frequent multi-character words up to `size` tokens in all. It is saved
  as the char tokenizer's vocab.txt, and with it the same jieba (pyproject pins its version,
  whose dictionary decides the cuts) encodes the text the same way.
  """
  kind = "wobert"
  DEFAULT_WORDS = 20000  # the post's WoBERT added 20,000 jieba words to BERT's characters

  @classmethod
  def train(cls, docs, min_count: int = 1, size: int = 0):
    chars = collections.Counter()
    words = collections.Counter()
    for d in docs:
      chars.update(d)
      # a word of one character is in the vocabulary as a character; whitespace ("\r\n" is
      # one jieba word) is never part of a word
      words.update(w for w in segment(d) if len(w) > 1 and not any(c.isspace() for c in w))
    chars = frequent(chars, min_count)
    base = NUM_SPECIAL + len(chars)
    if size and size < base:
      raise ConfigError(f"data.vocab_size={size} is smaller than tokenizer=wobert's {base} "
                        f"special tokens and characters; use at least {base} (or raise "
                        "data.min_count to keep fewer characters)")
    words = frequent(words)[:(size - base) if size else cls.DEFAULT_WORDS]
    return cls(list(SPECIALS) + chars + words)

  def encode(self, text: str) -> list[int]:
    index = self.index
    ids = []
    for word in segment(text):
      if word in index:
        ids.append(index[word])
      else:
        ids.extend(index.get(c, UNK) for c in word)
    return ids


class WordPieceTokenizer:
  """BERT WordPiece via the `tokenizers` library: trained on the training split or from vocab.txt."""
  kind = "wordpiece"

  def __init__(self, tok):
    self.tok = tok
    for i, s in enumerate(SPECIALS):
      if tok.token_to_id(s) != i:
        raise ConfigError(f"WordPiece vocabulary must put {s} at id {i}")

  @classmethod
  def train(cls, docs, vocab_size: int = 8000, vocab_file: str = "", lowercase: bool = True):
    from tokenizers import BertWordPieceTokenizer
    if vocab_file:
      return cls.from_vocab(read_vocab(vocab_file), lowercase=lowercase)
    tok = BertWordPieceTokenizer(lowercase=lowercase)
    tok.train_from_iterator(docs, vocab_size=vocab_size, special_tokens=list(SPECIALS),
                            show_progress=False)
    return cls(tok)

  @classmethod
  def from_vocab(cls, words, lowercase: bool = True, strip_accents=None,
                 chinese_chars: bool = True):
    """The tokenizer of a BERT vocab.txt (its lines, in file order), splitting text as
    BertTokenizer(Fast) does with do_lower_case=lowercase, strip_accents (None: as lowercase)
    and tokenize_chinese_chars=chinese_chars; ids are vocab_order(words)'s."""
    from tokenizers import BertWordPieceTokenizer
    vocab = vocab_order(words)
    return cls(BertWordPieceTokenizer({w: i for i, w in enumerate(vocab)}, lowercase=lowercase,
                                      strip_accents=strip_accents,
                                      handle_chinese_chars=chinese_chars))

  @property
  def vocab(self) -> list[str]:
    """The tokens in id order."""
    index = self.tok.get_vocab()
    return sorted(index, key=index.get)

  def settings(self) -> dict:
    """How it splits text: {lowercase, strip_accents, chinese_chars} of its normaliser."""
    normalizer = json.loads(self.tok._tokenizer.to_str())["normalizer"]
    return {"lowercase": normalizer["lowercase"], "strip_accents": normalizer["strip_accents"],
            "chinese_chars": normalizer["handle_chinese_chars"]}

  @property
  def vocab_size(self) -> int:
    return self.tok.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    return self.tok.decode(list(ids))

  def save(self, workdir: str) -> None:
    atomic_write_text(os.path.join(workdir, "tokenizer.json"), self.tok._tokenizer.to_str())

  @classmethod
  def load(cls, workdir: str):
    from tokenizers import Tokenizer
    from tokenizers.implementations import BaseTokenizer
    return cls(BaseTokenizer(Tokenizer.from_file(os.path.join(workdir, "tokenizer.json"))))


TOKENIZERS = {"char": CharTokenizer, "wobert": WobertTokenizer, "wordpiece": WordPieceTokenizer}


def get_tokenizer_class(name: str):
  if name not in TOKENIZERS:
    raise ConfigError(f"unknown data.tokenizer {name!r}; valid names: {sorted(TOKENIZERS)}")
  return TOKENIZERS[name]


def build_tokenizer(data_cfg, train_docs):
  cls = get_tokenizer_class(data_cfg.tokenizer)
  if cls is CharTokenizer:
    return cls.train(train_docs, min_count=data_cfg.min_count, max_size=data_cfg.vocab_size)
  if cls is WobertTokenizer:
    return cls.train(train_docs, min_count=data_cfg.min_count, size=data_cfg.vocab_size)
  return cls.train(train_docs, vocab_size=data_cfg.vocab_size or 8000,
                   vocab_file=data_cfg.vocab_file, lowercase=data_cfg.lowercase)


def load_tokenizer(name: str, workdir: str):
  return get_tokenizer_class(name).load(workdir)

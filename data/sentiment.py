"""A synthetic sentiment task the project generates itself, for PET (training/pet.py).

Sentences are strings of CJK symbols: a sentence of label `positive` draws its non-neutral
symbols from one set, a `negative` one from another, and about half of its symbols from a
neutral set shared by both, so the label is readable only from which set a sentence uses.

Two products:
- labelled sentences (synthetic_examples), the classification data;
- a review corpus (review_corpus, the MLM corpus `corpus=reviews`): each document is a rating
  phrase followed by a sentence, "很满意。" before a positive one, "不满意。" before a negative
  one. An MLM pretrained on it has seen the verbalizer words 很 / 不 where the PET pattern
  "[MASK]满意。{text}" puts its slot, as a BERT has seen such phrases in its corpus: the
  zero-shot case of the post.
Seeded and deterministic (same arguments, same text, on every machine).
"""
from __future__ import annotations

import dataclasses

import numpy as np

LABELS = ("negative", "positive")
WORDS = ("不", "很")  # the verbalizer of the post's sentiment example: 很满意 / 不满意
PATTERN = "[MASK]满意。{text}"
# symbols from U+4F00 on: none of them is in the pattern or the verbalizer words
FIRST_SYMBOL = 0x4F00
NUM_SENTIMENT = 12  # symbols of each sentiment set
NUM_NEUTRAL = 24


@dataclasses.dataclass(frozen=True)
class Example:
  """A text and its label (None: unlabelled); line: where it was read (0: generated)."""
  text: str
  label: str | None
  line: int = 0


def _symbols(start: int, n: int) -> list[str]:
  return [chr(FIRST_SYMBOL + start + i) for i in range(n)]


NEGATIVE_SYMBOLS = _symbols(0, NUM_SENTIMENT)
POSITIVE_SYMBOLS = _symbols(NUM_SENTIMENT, NUM_SENTIMENT)
NEUTRAL_SYMBOLS = _symbols(2 * NUM_SENTIMENT, NUM_NEUTRAL)


def sentence(rng, label: str, min_len: int = 8, max_len: int = 16,
             neutral: float = 0.5) -> str:
  """One sentence of `label`: each symbol neutral with probability `neutral`, else from the
  label's own set."""
  own = POSITIVE_SYMBOLS if label == "positive" else NEGATIVE_SYMBOLS
  n = int(rng.integers(min_len, max_len + 1))
  pick_neutral = rng.random(n) < neutral
  return "".join(NEUTRAL_SYMBOLS[rng.integers(NUM_NEUTRAL)] if p else own[rng.integers(len(own))]
                 for p in pick_neutral)


def synthetic_examples(num: int, seed: int) -> list[Example]:
  """`num` labelled sentences, the labels alternating in a shuffled order (balanced)."""
  rng = np.random.default_rng([seed, 1])
  labels = rng.permutation([LABELS[i % 2] for i in range(num)])
  return [Example(sentence(rng, str(label)), str(label)) for label in labels]


def review_corpus(num_docs: int = 4000, seed: int = 0) -> list[str]:
  """The MLM corpus: documents '很满意。<positive sentence>' and '不满意。<negative sentence>'.

  Its own seed stream: no sentence of it is one of synthetic_examples'."""
  rng = np.random.default_rng([seed, 2])
  docs = []
  for _ in range(num_docs):
    label = LABELS[int(rng.integers(2))]
    docs.append(PATTERN.replace("[MASK]", WORDS[LABELS.index(label)]).replace(
        "{text}", sentence(rng, label)))
  return docs

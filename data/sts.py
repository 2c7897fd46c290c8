"""Sentence-pair data: STS files, supervised pairs, SimCSE sentences, batches, and a synthetic set.

STS files come in two formats, recognised per file (and per line for the field count):
- STS Benchmark: `split genre dataset year sid score sentence1 sentence2` (tab-separated, an
  optional header line starting with `split`), or the official per-split files without the
  split column (`genre dataset year sid score sentence1 sentence2`, extra trailing fields
  ignored);
- plain: `sentence1 TAB sentence2 TAB score` (Chinese STS-B, most other sets).
A pairs file (`sentence1 TAB sentence2 [TAB score]`) lists positive pairs; a sentences file has
one sentence per line. Malformed lines are refused with `path:line: what is wrong`.

`synthetic` is an embedded paraphrase set the project generates itself, so every config runs
with no external data: sentences built from four slots (who, does, what, where), each concept
with several surface forms; a paraphrase keeps the concepts and changes the words and the word
order, and the STS score of a pair is 5 x (shared concepts) / 4.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from data.corpus import DataError, read_text
from data.tokenizers import CLS, PAD, SEP

STS_SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class StsData:
  """Parallel lists: s1[i], s2[i] with similarity score scores[i] (NaN when unscored)."""
  s1: list
  s2: list
  scores: np.ndarray

  def __len__(self) -> int:
    return len(self.s1)

  def sentences(self) -> list:
    """Every distinct sentence, in order of first appearance (SimCSE's training set)."""
    return list(dict.fromkeys(s for pair in zip(self.s1, self.s2) for s in pair))

  def positives(self, min_score: float) -> "StsData":
    keep = self.scores >= min_score
    return StsData([s for s, k in zip(self.s1, keep) if k], [s for s, k in zip(self.s2, keep) if k],
                   self.scores[keep])


def _score(text: str, where: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise DataError(f"{where}: score {text!r} is not a number") from None
  if not math.isfinite(value):
    raise DataError(f"{where}: score {text!r} is not finite")
  return value


def _lines(path: str):
  if not os.path.isfile(path):
    raise DataError(f"file {path!r} does not exist (working directory {os.getcwd()})")
  for lineno, line in enumerate(read_text(path).splitlines(), 1):
    if line.strip():
      yield lineno, line


def read_sts(path: str, split: str | None = None) -> StsData:
  """Scored pairs of an STS file in either format; `split` selects rows of the STS Benchmark
  format that has a split column (train/dev/test)."""
  if split and split not in STS_SPLITS:
    raise DataError(f"unknown STS split {split!r}; valid names: {list(STS_SPLITS)}")
  s1, s2, scores, has_split = [], [], [], False
  for lineno, line in _lines(path):
    where = f"{path}:{lineno}"
    f = line.split("\t")
    if lineno == 1 and f[0].strip().lower() == "split":  # the header of the train-dev file
      has_split = True
      continue
    if len(f) == 3:
      a, b, score, row_split = f[0], f[1], f[2], None
    elif len(f) >= 8 and f[0] in STS_SPLITS:
      a, b, score, row_split, has_split = f[6], f[7], f[5], f[0], True
    elif len(f) >= 7:
      a, b, score, row_split = f[5], f[6], f[4], None
    else:
      raise DataError(f"{where}: expected 3 tab-separated fields (s1, s2, score) or the STS "
                      f"Benchmark's 7-8 (... score s1 s2), found {len(f)}")
    if split and row_split is None:
      raise DataError(f"{where}: split={split!r} was requested but this line has no split "
                      "column; leave the split empty for this file")
    value = _score(score.strip(), where)
    if not a.strip() or not b.strip():
      raise DataError(f"{where}: empty sentence")
    if split and row_split != split:
      continue
    s1.append(a.strip())
    s2.append(b.strip())
    scores.append(value)
  if not s1:
    raise DataError(f"{path}: no scored pairs" + (f" in split {split!r}" if split else "") +
                    (f"; the file has no split column" if split and not has_split else ""))
  return StsData(s1, s2, np.asarray(scores, np.float64))


def read_pairs(path: str) -> StsData:
  """A pairs file: `s1 TAB s2 [TAB score]` per line, every line a positive pair."""
  s1, s2, scores = [], [], []
  for lineno, line in _lines(path):
    f = line.split("\t")
    if len(f) not in (2, 3) or not f[0].strip() or not f[1].strip():
      raise DataError(f"{path}:{lineno}: expected `sentence1 TAB sentence2 [TAB score]` with "
                      f"two non-empty sentences, found {len(f)} field(s)")
    s1.append(f[0].strip())
    s2.append(f[1].strip())
    scores.append(_score(f[2].strip(), f"{path}:{lineno}") if len(f) == 3 else math.nan)
  if not s1:
    raise DataError(f"{path}: no pairs")
  return StsData(s1, s2, np.asarray(scores, np.float64))


def read_sentences(path: str) -> list:
  out = [line.strip() for _, line in _lines(path)]
  if not out:
    raise DataError(f"{path}: no sentences")
  return out


# ---------------------------------------------------------------------------------------------
# The embedded synthetic paraphrase set

# each inner tuple is one concept; its words are interchangeable surface forms
_SLOTS = {
    "who": [("the cat", "the kitten"), ("a dog", "a puppy", "the hound"), ("the man", "a guy"),
            ("the woman", "a lady"), ("the child", "a kid"), ("the chef", "a cook"),
            ("the pilot", "an aviator"), ("the farmer", "a grower"), ("the doctor", "a physician"),
            ("the bird", "a sparrow"), ("the student", "a pupil"), ("the king", "a monarch")],
    "does": [("eats", "consumes", "devours"), ("carries", "holds", "bears"),
             ("paints", "colours"), ("finds", "discovers"), ("throws", "tosses"),
             ("cleans", "washes"), ("buys", "purchases"), ("builds", "constructs"),
             ("watches", "observes"), ("sells", "trades"), ("fixes", "repairs"),
             ("hides", "conceals")],
    "what": [("an apple", "a fruit"), ("the ball", "a sphere"), ("a boat", "a ship"),
             ("the car", "an automobile"), ("a letter", "a note"), ("the chair", "a seat"),
             ("a book", "a novel"), ("the box", "a crate"), ("a guitar", "an instrument"),
             ("the fish", "a trout"), ("a hat", "a cap"), ("the key", "a latch key")],
    "where": [("in the park", "at the park"), ("near the river", "by the stream"),
              ("in the kitchen", "inside the kitchen"), ("on the street", "along the road"),
              ("at school", "in the classroom"), ("in the garden", "among the flowers"),
              ("on the beach", "by the sea"), ("in the forest", "among the trees"),
              ("at the market", "in the bazaar"), ("on the roof", "up on the roof"),
              ("in the city", "downtown"), ("at night", "after dark")],
}
_ORDERS = ("{who} {does} {what} {where}", "{where} {who} {does} {what}",
           "{who} {where} {does} {what}")


def _render(rng, concepts) -> str:
  words = {slot: str(rng.choice(_SLOTS[slot][c])) for slot, c in concepts.items()}
  return str(rng.choice(_ORDERS)).format(**words)


def _concepts(rng):
  return {slot: int(rng.integers(len(forms))) for slot, forms in _SLOTS.items()}


def synthetic_pairs(num: int, seed: int) -> StsData:
  """`num` paraphrase pairs (score 5): the same concepts in other words and order."""
  rng = np.random.default_rng([seed, 1])
  s1, s2 = [], []
  for _ in range(num):
    c = _concepts(rng)
    s1.append(_render(rng, c))
    s2.append(_render(rng, c))
  return StsData(s1, s2, np.full(num, 5.0))


def synthetic_sts(num: int, seed: int) -> StsData:
  """`num` scored pairs: the second sentence keeps k of the four concepts, score 5k/4."""
  rng = np.random.default_rng([seed, 2])
  s1, s2, scores = [], [], []
  slots = list(_SLOTS)
  for _ in range(num):
    a = _concepts(rng)
    k = int(rng.integers(0, len(slots) + 1))
    b = dict(a)
    for slot in rng.choice(slots, size=len(slots) - k, replace=False):
      b[slot] = (a[slot] + int(rng.integers(1, len(_SLOTS[slot])))) % len(_SLOTS[slot])
    s1.append(_render(rng, a))
    s2.append(_render(rng, b))
    scores.append(5.0 * k / len(slots))
  return StsData(s1, s2, np.asarray(scores))


# ---------------------------------------------------------------------------------------------
# Tokens and batches

def encode_sentences(tokenizer, sentences, length: int) -> np.ndarray:
  """[CLS] ids [SEP], truncated to `length` and padded with [PAD] -> int32 [N, length]."""
  out = np.full((len(sentences), length), PAD, np.int32)
  for i, s in enumerate(sentences):
    ids = [CLS] + tokenizer.encode(s)[:length - 2] + [SEP]
    out[i, :len(ids)] = ids
  return out


def encode_seq2seq(tokenizer, first, second, length: int):
  """UniLM inputs [CLS] a [SEP] b [SEP]: (tokens, segment ids 0 on a, 1 on b) int32 [N, length].

  Each sentence keeps at most (length - 3) // 2 tokens, so b always fits.
  """
  half = (length - 3) // 2
  tokens = np.full((len(first), length), PAD, np.int32)
  segments = np.zeros((len(first), length), np.int32)
  for i, (a, b) in enumerate(zip(first, second)):
    a_ids = [CLS] + tokenizer.encode(a)[:half] + [SEP]
    b_ids = tokenizer.encode(b)[:half] + [SEP]
    tokens[i, :len(a_ids) + len(b_ids)] = a_ids + b_ids
    segments[i, len(a_ids):len(a_ids) + len(b_ids)] = 1
  return tokens, segments


class ExampleBatches:
  """Batches of examples (a dict of arrays with a leading example axis) as a function of step.

  Each epoch is a fresh permutation of the examples (seeded by (seed, epoch)); a batch never
  spans two epochs, so no example appears twice in a batch (it would be its own negative).
  """

  def __init__(self, arrays: dict, batch_size: int, seed: int):
    self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
    self.num = len(next(iter(arrays.values())))
    self.per_epoch = self.num // batch_size
    if self.per_epoch < 1:
      raise DataError(f"{self.num} training examples are fewer than one batch of "
                      f"{batch_size}; use a smaller train.batch_size or more data")

  def batch(self, step: int) -> dict:
    epoch, within = divmod(step, self.per_epoch)
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.num)
    idx = perm[within * self.batch_size:(within + 1) * self.batch_size]
    return {k: v[idx] for k, v in self.arrays.items()}

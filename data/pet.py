"""PET data: labelled-text files, K-shot samples, and the pattern that makes a text an MLM input.

Files (data.format):
- jsonl: one object per line, {"text": ..., "label": ...} (a number label is read as its
  text, 1 -> "1");
- tsv: `text<TAB>label` per line (the label is after the last tab).
Blank lines are skipped; a bad line is refused with `path:line: what is wrong`. Unlabelled
text (data.unlabeled) is read in the same format with the label optional.

A pattern is a string with one `{text}` and one or more `[MASK]` slots, e.g. the post's
"[MASK]满意。{text}". An input is [CLS] pattern-with-text [SEP]: the literal pieces of the
pattern are tokenised on their own, each slot is one [MASK] token, and the text is cut so that
the whole fits in max_len (the pattern itself is never cut). A verbalizer maps each label to a
word whose tokens fill the slots in order, so every word must be as many tokens as there are
slots.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from data.corpus import DataError, read_text
from data.sentiment import Example
from data.tokenizers import CLS, MASK, PAD, SEP, UNK
from utils.errors import ConfigError

FORMATS = ("jsonl", "tsv")
SLOT, TEXT = "[MASK]", "{text}"


# ---------------------------------------------------------------------------------------------
# Files

def _jsonl_example(obj, where: str, labeled: bool) -> Example:
  if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
    raise DataError(f"{where}: expected an object with a string field 'text'")
  label = obj.get("label")
  if label is None:
    if labeled:
      raise DataError(f"{where}: no 'label' field; every training and evaluation example needs "
                      "one")
    return Example(obj["text"], None)
  if isinstance(label, bool) or not isinstance(label, (str, int)):
    raise DataError(f"{where}: label {label!r} is neither a string nor an integer")
  return Example(obj["text"], str(label))


def read_examples(path: str, fmt: str, labeled: bool = True) -> list[Example]:
  """The examples of a jsonl or tsv file (labeled=False: the label may be absent)."""
  if fmt not in FORMATS:
    raise ConfigError(f"unknown data.format {fmt!r}; valid names: {list(FORMATS)}")
  if not os.path.isfile(path):
    raise DataError(f"file {path!r} does not exist (working directory {os.getcwd()})")
  out = []
  for lineno, line in enumerate(read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    where = f"{path}:{lineno}"
    if fmt == "jsonl":
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})") from None
      example = _jsonl_example(obj, where, labeled)
    else:
      text, tab, label = line.rpartition("\t")
      if not tab:
        if labeled:
          raise DataError(f"{where}: expected `text<TAB>label`, found no tab")
        text, label = line, None
      elif not label.strip():
        raise DataError(f"{where}: empty label after the tab")
      example = Example(text, label.strip() if label is not None else None)
    if example.text.strip():
      out.append(Example(example.text.strip(), example.label, lineno))
  if not out:
    raise DataError(f"{path}: no examples")
  return out


def check_labels(examples, labels, source: str) -> None:
  """Refuses (one line naming the line) an example whose label the verbalizer lacks."""
  known = set(labels)
  for e in examples:
    if e.label is not None and e.label not in known:
      where = f"{source}:{e.line}" if e.line else source
      raise DataError(f"{where}: label {e.label!r} is not one of pet.labels {list(labels)}; "
                      "add it to pet.labels with its word in pet.words")


def sample_shots(examples, labels, shots: int, seed: int, source: str = "") -> list[Example]:
  """`shots` examples of each label (in labels' order), drawn without replacement with the
  seed; shots = 0: every example."""
  if shots == 0:
    return list(examples)
  rng = np.random.default_rng([seed, 3])
  out = []
  for label in labels:
    pool = [e for e in examples if e.label == label]
    if len(pool) < shots:
      raise DataError(f"{source}: label {label!r} has {len(pool)} examples, fewer than "
                      f"pet.shots={shots}; use fewer shots or more data")
    out.extend(pool[i] for i in sorted(rng.choice(len(pool), shots, replace=False)))
  return out


# ---------------------------------------------------------------------------------------------
# Pattern and verbalizer

def pattern_pieces(pattern: str) -> list[str]:
  """The pattern split into literal pieces, SLOT and TEXT; refused unless it has one {text}
  and at least one [MASK]."""
  pieces = [p for p in re.split(r"(\[MASK\]|\{text\})", pattern) if p]
  if pieces.count(TEXT) != 1 or SLOT not in pieces:
    raise ConfigError(f"pet.pattern {pattern!r} must hold {TEXT} once and {SLOT} at least once "
                      "(e.g. '[MASK]满意。{text}')")
  return pieces


def num_slots(pattern: str) -> int:
  return pattern_pieces(pattern).count(SLOT)


def pattern_ids(tokenizer, pattern: str) -> list:
  """The pattern as token ids, with the string TEXT where the text goes."""
  out = []
  for piece in pattern_pieces(pattern):
    out.extend([MASK] if piece == SLOT else [TEXT] if piece == TEXT else
               tokenizer.encode(piece))
  return out


def encode(tokenizer, texts, pattern: str, max_len: int):
  """(tokens int32 [N, max_len], slots int32 [N, S]): [CLS] pattern-with-text [SEP], padded;
  slots are the positions of the pattern's [MASK] tokens, in order."""
  template = pattern_ids(tokenizer, pattern)
  room = max_len - 2 - (len(template) - 1)
  if room < 1:
    raise ConfigError(f"pet.pattern takes {len(template) - 1} tokens, which with [CLS] and "
                      f"[SEP] leaves no room for the text in data.max_len={max_len}; raise "
                      "data.max_len")
  cut = template.index(TEXT)
  slots_before = [i + 1 for i, t in enumerate(template[:cut]) if t == MASK]
  after = [i for i, t in enumerate(template[cut + 1:]) if t == MASK]
  tokens = np.full((len(texts), max_len), PAD, np.int32)
  slots = np.zeros((len(texts), len(slots_before) + len(after)), np.int32)
  for row, text in enumerate(texts):
    ids = tokenizer.encode(text)[:room]
    seq = [CLS, *template[:cut], *ids, *template[cut + 1:], SEP]
    tokens[row, :len(seq)] = seq
    slots[row] = slots_before + [1 + cut + len(ids) + i for i in after]
  return tokens, slots


def verbalizer_ids(tokenizer, labels, words, pattern: str) -> np.ndarray:
  """int32 [C, S]: the tokens of each label's word, one per slot; refused in one line when a
  word is not as many tokens as the pattern has slots, is unknown to the vocabulary, or is
  another label's word too."""
  labels, words = list(labels), list(words)
  if len(labels) != len(words) or len(labels) < 2:
    raise ConfigError(f"pet.labels {labels} and pet.words {words} must be lists of the same "
                      "length, at least two: one verbalizer word per label")
  if len(set(labels)) != len(labels):
    raise ConfigError(f"pet.labels {labels} names a label twice")
  slots = num_slots(pattern)
  out = []
  for label, word in zip(labels, words):
    ids = tokenizer.encode(word)
    if len(ids) != slots:
      raise ConfigError(f"verbalizer word {word!r} of label {label!r} is {len(ids)} tokens but "
                        f"pet.pattern has {slots} [MASK] slot{'s' * (slots != 1)}; give every "
                        f"label a word of {slots} token{'s' * (slots != 1)}")
    if UNK in ids:
      raise ConfigError(f"verbalizer word {word!r} of label {label!r} is not in the model's "
                        "vocabulary (it encodes to [UNK]); pick a word the MLM knows")
    out.append(ids)
  seen = {}
  for label, ids in zip(labels, out):
    other = seen.setdefault(tuple(ids), label)
    if other != label:
      raise ConfigError(f"labels {other!r} and {label!r} have the same verbalizer tokens; "
                        "give each label its own word")
  return np.asarray(out, np.int32)

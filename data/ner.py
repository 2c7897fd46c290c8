"""Named-entity data: BIO and CLUENER files, a synthetic nested-entity set, tokens and spans.

A sentence is its text and a set of entities (type, start, end), character offsets with an
inclusive end; entities may nest and overlap. Formats:
- bio: one `character tag` per line (space- or tab-separated), a blank line between
  sentences; tags O, B-TYPE, I-TYPE. An I-TYPE that does not continue an entity of TYPE
  starts one (conlleval's reading). BIO cannot express nesting.
- cluener: JSON lines {"text": ..., "label": {type: {entity text: [[start, end], ...]}}}
  (CLUENER2020's layout, inclusive end); every span must lie in the text and spell its
  entity.
A bad file is refused with `path:line: what is wrong`.

`synthetic` is a nested-entity set the project generates itself (synthetic_sentences), so the
NER config runs with no external data.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from data.corpus import DataError, read_text
from data.tokenizers import CLS, PAD, SEP

FORMATS = ("bio", "cluener")


@dataclasses.dataclass(frozen=True)
class Sentence:
  text: str
  entities: frozenset  # {(type, start, end)}, character offsets, end inclusive


def _numbered_lines(path: str):
  if not os.path.isfile(path):
    raise DataError(f"file {path!r} does not exist (working directory {os.getcwd()})")
  return enumerate(read_text(path).splitlines(), 1)


def _nonempty(path: str, sentences: list) -> list:
  if not sentences:
    raise DataError(f"{path}: no sentences")
  return sentences


def read_bio(path: str) -> list[Sentence]:
  """Sentences of a BIO file: `char tag` lines, blank lines between sentences."""
  sentences, chars, entities, open_entity = [], [], set(), None

  def close():
    if open_entity is not None:
      entities.add((open_entity[0], open_entity[1], len(chars) - 1))

  def flush():
    close()
    if chars:
      sentences.append(Sentence("".join(chars), frozenset(entities)))

  for lineno, line in _numbered_lines(path):
    fields = line.split()
    if not fields:
      flush()
      chars, entities, open_entity = [], set(), None
      continue
    where = f"{path}:{lineno}"
    if len(fields) != 2 or len(fields[0]) != 1:
      raise DataError(f"{where}: expected `character tag` (one character, one tag), found "
                      f"{line.strip()!r}")
    char, tag = fields
    prefix, _, kind = tag.partition("-")
    if tag != "O" and (prefix not in ("B", "I") or not kind):
      raise DataError(f"{where}: tag {tag!r} is not BIO (O, B-TYPE, I-TYPE); convert other "
                      "schemes (BIOES, BMES, ...) to BIO first")
    if tag == "O" or prefix == "B" or open_entity is None or open_entity[0] != kind:
      close()
      open_entity = None if tag == "O" else (kind, len(chars))
    chars.append(char)
  flush()
  return _nonempty(path, sentences)


def _cluener_entities(text: str, label, where: str) -> set:
  if not isinstance(label, dict):
    raise DataError(f"{where}: 'label' must be an object {{type: {{entity: [[start, end], "
                    "...]}}}}")
  out = set()
  for kind, by_entity in label.items():
    if not isinstance(by_entity, dict):
      raise DataError(f"{where}: label {kind!r} must map entity texts to [[start, end], ...]")
    for entity, spans in by_entity.items():
      for span in spans if isinstance(spans, list) else [None]:
        if not (isinstance(span, list) and len(span) == 2 and
                all(isinstance(x, int) for x in span)):
          raise DataError(f"{where}: {kind} {entity!r}: spans must be [[start, end], ...] "
                          f"integer pairs, found {spans!r}")
        start, end = span
        if not 0 <= start <= end < len(text):
          raise DataError(f"{where}: {kind} {entity!r} span [{start}, {end}] is out of range "
                          f"for a text of {len(text)} characters (end is inclusive)")
        if text[start:end + 1] != entity:
          raise DataError(f"{where}: {kind} span [{start}, {end}] is "
                          f"{text[start:end + 1]!r} in the text, not {entity!r}")
        out.add((kind, start, end))
  return out


def read_cluener(path: str) -> list[Sentence]:
  """Sentences of a CLUENER-style JSON-lines file."""
  sentences = []
  for lineno, line in _numbered_lines(path):
    if not line.strip():
      continue
    where = f"{path}:{lineno}"
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "label" not in row:
      raise DataError(f"{where}: expected {{\"text\": ..., \"label\": {{...}}}} (an unlabelled "
                      "file cannot train or score a model)")
    sentences.append(Sentence(row["text"], frozenset(_cluener_entities(row["text"],
                                                                        row["label"], where))))
  return _nonempty(path, sentences)


READERS = {"bio": read_bio, "cluener": read_cluener}


def read_ner(path: str, fmt: str) -> list[Sentence]:
  if fmt not in READERS:
    raise DataError(f"unknown NER format {fmt!r}; valid names: {list(FORMATS)}")
  return READERS[fmt](path)


def entity_types(sentences) -> list[str]:
  """The entity types of a set, sorted (the order of the head's types)."""
  return sorted({kind for s in sentences for kind, _, _ in s.entities})


# ---------------------------------------------------------------------------------------------
# The synthetic nested-entity set

# Disjoint character classes, so that an entity's extent is decidable from the characters and
# their neighbours: a model has to learn the classes, the suffix words and the nesting.
_PLACE = "京沪杭宁苏湖川滇黔桂闽赣皖鲁豫晋冀辽吉陕甘青藏蒙粤琼渝津"
_SURNAME = "王李张刘陈杨黄赵吴周"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛超秀霞刚"
_SUFFIX = ("大学", "银行", "公司", "医院")
_FILLER = "的了在是我有他这中来上个到说们为和你地出道也时年得就那要下以生会着去之过对可里后么心多天而能好都然没日于起还成事只作想看无开手用方又如前所见经头面同已老从动两长"


def _name(rng, kind: str):
  """(text, [(type, start, end)] within it) of one entity of kind LOC, PER or ORG."""
  if kind == "LOC":
    text = "".join(rng.choice(list(_PLACE), size=int(rng.integers(2, 4))))
    return text, [("LOC", 0, len(text) - 1)]
  if kind == "PER":
    text = rng.choice(list(_SURNAME)) + "".join(rng.choice(list(_GIVEN),
                                                           size=int(rng.integers(1, 3))))
    return text, [("PER", 0, len(text) - 1)]
  # an organisation is a place or a person followed by a suffix: the nested entity
  inner, entities = _name(rng, "LOC" if rng.random() < 0.6 else "PER")
  text = inner + _SUFFIX[int(rng.integers(len(_SUFFIX)))]
  return text, entities + [("ORG", 0, len(text) - 1)]


def synthetic_sentences(num: int, seed: int) -> list[Sentence]:
  """`num` sentences of filler words and 1-3 entities (LOC, PER, and ORG around a LOC or a
  PER), each entity between fillers; about a third of the sentences hold a nested pair."""
  rng = np.random.default_rng([seed, 3])
  out = []
  for _ in range(num):
    parts, entities = [], set()
    for kind in rng.choice(["LOC", "PER", "ORG"], size=int(rng.integers(1, 4))):
      parts.append("".join(rng.choice(list(_FILLER), size=int(rng.integers(1, 4)))))
      start = sum(map(len, parts))
      text, spans = _name(rng, str(kind))
      parts.append(text)
      entities |= {(k, start + i, start + j) for k, i, j in spans}
    parts.append("".join(rng.choice(list(_FILLER), size=int(rng.integers(0, 3)))))
    out.append(Sentence("".join(parts), frozenset(entities)))
  return out


# ---------------------------------------------------------------------------------------------
# Tokens and spans

def spannable(tokens):
  """Which tokens may be in an entity: the characters, not [CLS], [SEP] or padding."""
  return (tokens != PAD) & (tokens != CLS) & (tokens != SEP)


def encode(sentences, tokenizer, types, length: int) -> dict:
  """{'tokens': [N, length] int32, 'spans': [N, S, 3] int32} for training.

  tokens: [CLS] one token per character [SEP], truncated and padded with [PAD], so character
  c is token c + 1. spans: (type index, start token, end token) per entity of a known type
  that fits in the truncated text; rows (-1, -1, -1) pad S to the most entities of a sentence.
  """
  index = {t: i for i, t in enumerate(types)}
  keep = length - 2
  tokens = np.full((len(sentences), length), PAD, np.int32)
  rows = []
  for n, s in enumerate(sentences):
    ids = [CLS] + tokenizer.encode(s.text[:keep]) + [SEP]
    tokens[n, :len(ids)] = ids
    rows.append(sorted((index[k], i + 1, j + 1) for k, i, j in s.entities
                       if k in index and j < keep))
  spans = np.full((len(sentences), max([1] + [len(r) for r in rows]), 3), -1, np.int32)
  for n, r in enumerate(rows):
    if r:
      spans[n, :len(r)] = r
  return {"tokens": tokens, "spans": spans}

"""Reading corpora into lists of documents, and splitting them into train/valid by document.

A corpus is `synthetic` (the embedded generator), `reviews` (the synthetic sentiment task's
review corpus, data/sentiment.py: an MLM for PET's zero-shot case), the name of a text shipped with the project
(`EMBEDDED_TEXTS`, in data/texts/), or a file path / glob of UTF-8 plain text
(`format=text`; documents one per line or separated by blank lines) or JSON lines
(`format=jsonl`; one document per line in `text_field`). Files ending in .gz, .bz2 or .xz are
decompressed as they are read.
"""
from __future__ import annotations

import bz2
import glob as globlib
import gzip
import json
import lzma
import math
import os
import warnings

import numpy as np

from data import sentiment, synthetic
from utils.errors import UserError

DOC_SEPARATORS = ("line", "blank_line")
# name -> file in data/texts/ (data/texts/README.md says what each is and where it is from)
EMBEDDED_TEXTS = {"hongloumeng": "hongloumeng.txt.xz"}
TEXTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "texts")
FORMATS = ("text", "jsonl")


class DataError(UserError):
  """Bad input data; the message names the file and the position."""


def resolve_paths(spec: str) -> list[str]:
  if spec in EMBEDDED_TEXTS:
    return [os.path.join(TEXTS_DIR, EMBEDDED_TEXTS[spec])]
  if any(c in spec for c in "*?["):
    paths = sorted(p for p in globlib.glob(os.path.expanduser(spec), recursive=True)
                   if os.path.isfile(p))
    if not paths:
      raise DataError(f"corpus glob {spec!r} matches no files; check the pattern and the "
                      f"working directory ({os.getcwd()})")
    return paths
  path = os.path.expanduser(spec)
  if not os.path.exists(path):
    raise DataError(f"corpus file {spec!r} does not exist (working directory {os.getcwd()}); "
                    f"pass an existing file or glob, corpus=synthetic, or one of {sorted(EMBEDDED_TEXTS)}")
  if os.path.isdir(path):
    raise DataError(f"corpus {spec!r} is a directory; pass a file or a glob such as "
                    f"'{os.path.join(spec, '*.txt')}'")
  return [path]


# by file name: what opens it, and the name of the format in an error message
COMPRESSED = {".gz": (gzip.open, "gzip"), ".bz2": (bz2.open, "bzip2"), ".xz": (lzma.open, "xz")}


def read_bytes(path: str) -> bytes:
  """The file's bytes, decompressed when its name ends in .gz, .bz2 or .xz."""
  opener, name = COMPRESSED.get(os.path.splitext(path)[1].lower(), (open, None))
  try:
    with opener(path, "rb") as f:
      return f.read()
  except (OSError, EOFError, lzma.LZMAError) as e:
    if name is None:
      raise
    # a truncated or mislabelled archive: say so instead of reading part of it
    raise DataError(f"{path}: not a complete {name} file ({e}); re-download or decompress it "
                    "and pass the plain file") from None


def read_text(path: str, encoding_errors: str = "strict") -> str:
  raw = read_bytes(path)
  try:
    return raw.decode("utf-8", errors=encoding_errors)
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: invalid UTF-8 at byte offset {e.start} ({raw[e.start:e.start + 4]!r}); "
                    "fix the file or set data.encoding_errors=replace to substitute U+FFFD") from None


def split_text(text: str, separator: str) -> list[str]:
  if separator == "line":
    docs = text.splitlines()
  elif separator == "blank_line":
    docs, cur = [], []
    for line in text.splitlines():
      if line.strip():
        cur.append(line)
      elif cur:
        docs.append("\n".join(cur))
        cur = []
    if cur:
      docs.append("\n".join(cur))
  else:
    raise DataError(f"unknown data.doc_separator {separator!r}; valid names: {list(DOC_SEPARATORS)}")
  return [d.strip() for d in docs if d.strip()]


def read_jsonl(path: str, text_field: str, encoding_errors: str = "strict") -> list[str]:
  docs = []
  for lineno, line in enumerate(read_text(path, encoding_errors).splitlines(), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or text_field not in obj or not isinstance(obj[text_field], str):
      raise DataError(f"{path}:{lineno}: expected an object with a string field "
                      f"{text_field!r} (set data.text_field to the right name)")
    if obj[text_field].strip():
      docs.append(obj[text_field].strip())
  return docs


def load_documents(data_cfg) -> list[str]:
  """Documents of the configured corpus, in file order."""
  spec = data_cfg.corpus
  if spec == "synthetic":
    s = data_cfg.synthetic
    return synthetic.generate(**s.to_dict())
  if spec == "reviews":
    return sentiment.review_corpus()
  if data_cfg.format not in FORMATS:
    raise DataError(f"unknown data.format {data_cfg.format!r}; valid names: {list(FORMATS)}")
  docs = []
  for path in resolve_paths(spec):
    if os.path.getsize(path) == 0:
      raise DataError(f"corpus file {path!r} is empty")
    if data_cfg.format == "jsonl":
      file_docs = read_jsonl(path, data_cfg.text_field, data_cfg.encoding_errors)
    else:
      file_docs = split_text(read_text(path, data_cfg.encoding_errors), data_cfg.doc_separator)
    if not file_docs:
      raise DataError(f"corpus file {path!r} has no non-blank text")
    docs.extend(file_docs)
  return docs


def split_documents(docs: list[str], valid_fraction: float, seed: int, num_blocks: int = 50):
  """Deterministic train/valid split by documents.

  Validation takes whole contiguous blocks of documents (so that long evaluation sequences keep
  the corpus's own long-range structure, e.g. consecutive paragraphs of a novel); no document is
  in both splits. A corpus of a single document is first cut into `num_blocks` pieces.
  """
  if not 0.0 < valid_fraction < 1.0:
    raise DataError(f"data.valid_fraction must be in (0, 1), got {valid_fraction}")
  if len(docs) < 2:
    warnings.warn("the corpus is a single document; cutting it into pieces for the "
                  "train/valid split (use doc_separator=line or blank_line to split by documents)")
    text = docs[0]
    size = math.ceil(len(text) / num_blocks)
    docs = [text[i:i + size] for i in range(0, len(text), size)]
  blocks = np.array_split(np.arange(len(docs)), min(num_blocks, len(docs)))
  n_valid = max(1, round(valid_fraction * len(blocks)))
  chosen = set(np.random.default_rng(seed).choice(len(blocks), n_valid, replace=False).tolist())
  train, valid = [], []
  for b, idx in enumerate(blocks):
    (valid if b in chosen else train).extend(docs[i] for i in idx)
  return train, valid

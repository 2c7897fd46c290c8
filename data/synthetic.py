"""An embedded corpus the project generates itself: a Zipfian Markov language with repeated spans.

Why this shape: the Markov chain makes short context useful (each symbol's successor follows a
Zipfian distribution), and each document re-uses a few of its own earlier spans at random
distances, so a masked symbol inside a repeat can be recovered by attending far back (or ahead)
to another copy. A model that uses long context beats one that does not, and doing so at lengths
longer than it was trained on is exactly what the length-extrapolation study measures.

Symbols are CJK characters, so the default char-level tokenizer applies as it does to Chinese.
Generation is seeded and deterministic (same arguments, same text, on every machine).
"""
from __future__ import annotations

import numpy as np

FIRST_SYMBOL = 0x4E00  # CJK Unified Ideographs


def zipf_transitions(rng, vocab: int, exponent: float, branching: int):
  """Each state's successors: `branching` random symbols with Zipfian probabilities."""
  succ = np.stack([rng.choice(vocab, size=branching, replace=False) for _ in range(vocab)])
  w = 1.0 / np.arange(1, branching + 1) ** exponent
  return succ, np.cumsum(w / w.sum())


def generate(num_docs: int = 400, doc_len: int = 3000, vocab: int = 400, exponent: float = 1.1,
             branching: int = 24, repeat_prob: float = 0.5, span_min: int = 8,
             span_max: int = 32, max_distance: int = 0, seed: int = 0) -> list[str]:
  """Returns `num_docs` documents of `doc_len` characters each.

  A repeat copies a span that starts at most `max_distance` characters earlier (0: anywhere
  earlier in the document).
  """
  rng = np.random.default_rng(seed)
  succ, cdf = zipf_transitions(rng, vocab, exponent, branching)
  # Markov streams for all documents at once (the loop runs over positions, not documents).
  ids = np.empty((num_docs, doc_len), np.int64)
  ids[:, 0] = rng.integers(vocab, size=num_docs)
  choice = np.searchsorted(cdf, rng.random((num_docs, doc_len)))
  for t in range(1, doc_len):
    ids[:, t] = succ[ids[:, t - 1], choice[:, t]]
  # Repeated spans: walk each document; with probability repeat_prob start a copy of a span
  # that occurred earlier in the same document.
  for d in range(num_docs):
    t = 64
    while t < doc_len - span_max:
      n = int(rng.integers(span_min, span_max + 1))
      if rng.random() < repeat_prob:
        lo = max(0, t - max_distance) if max_distance else 0
        src = int(rng.integers(lo, t - n)) if t - n > lo else lo
        ids[d, t:t + n] = ids[d, src:src + n]
      t += n
  chars = np.array([chr(FIRST_SYMBOL + i) for i in range(vocab)])
  return ["".join(chars[row]) for row in ids]

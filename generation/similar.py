"""Similar sentences as SimBERT makes them: generate candidates for segment B from the input as
segment A, then rank them by the cosine similarity of the model's own sentence embedding of
each candidate to that of the input."""
from __future__ import annotations

import numpy as np

from generation.seq2seq import encode_prompts, generate_ids, prompt_length
from generation.strategies import Strategy

PROMPTS_PER_CALL = 8  # prompts decoded together; the last group is padded (one compilation)


def cosine(a, b):
  """Cosine similarity of each row of b [M, D] with a [D]."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return b @ a / np.maximum(np.linalg.norm(b, axis=1) * np.linalg.norm(a), 1e-12)


def similar_sentences(model, params, tokenizer, sentences, embed, *, count: int, max_len: int,
                      max_new: int, strategy: Strategy, seed: int = 0) -> list:
  """For each sentence: {"input", "candidates": [{"text", "similarity"}, ...]}, the distinct
  candidates among `count` generated, most similar first. embed(sentences) -> [N, D]: the
  model's sentence embedding; max_len: the run's pair length (the prompt is truncated as in
  training)."""
  length = prompt_length(max_len)
  candidates = []
  for i in range(0, len(sentences), PROMPTS_PER_CALL):
    group = list(sentences[i:i + PROMPTS_PER_CALL])
    pad = PROMPTS_PER_CALL - len(group)
    tokens, lengths = encode_prompts(tokenizer, group + group[:1] * pad, length)
    ids = generate_ids(model, params, tokens, lengths, max_new=max_new, strategy=strategy,
                       count=count, seed=seed + i)
    candidates += [[tokenizer.decode(c) for c in rows] for rows in ids[:len(group)]]
  return [{"input": s, "candidates": ranked(s, texts, embed)}
          for s, texts in zip(sentences, candidates)]


def ranked(sentence, texts, embed) -> list:
  """The distinct texts as [{"text", "similarity"}], by cosine similarity of their embedding to
  the sentence's, most similar first (ties in generation order)."""
  texts = list(dict.fromkeys(texts))
  similarity = cosine(embed([sentence])[0], embed(texts))
  order = np.argsort(-similarity, kind="stable")
  return [{"text": texts[k], "similarity": float(similarity[k])} for k in order]


def describe(results) -> str:
  """One block per input: the input, then each candidate with its similarity."""
  lines = []
  for r in results:
    lines.append(f"input: {r['input']}")
    lines += [f"  {c['similarity']:.4f}  {c['text']}" for c in r["candidates"]]
  return "\n".join(lines)

"""Markdown tables in the shape of the posts' tables."""
from __future__ import annotations

import collections
import math


def length_table(rows: list[tuple[str, dict]], metric: str = "accuracy", percent: bool = True,
                 digits: int = 2) -> str:
  """rows: [(name, {length: {metric: value}})] -> '| run | 64 | 128 | ...' markdown.

  A length missing from a run (refused by a length-bound model) is shown as '-'.
  """
  lengths = sorted({int(n) for _, res in rows for n in res})
  head = "| run | " + " | ".join(str(n) for n in lengths) + " |"
  sep = "|---|" + "---|" * len(lengths)
  lines = [head, sep]
  for name, res in rows:
    res = {int(k): v for k, v in res.items()}
    cells = []
    for n in lengths:
      if n in res:
        v = res[n][metric] * (100.0 if percent else 1.0)
        cells.append(f"{v:.{digits}f}")
      else:
        cells.append("-")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (n - 1; 0 for a single value)."""
  n = len(values)
  m = sum(values) / n
  return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def seed_table(cells: dict, row_header: list[str], row_order=None, digits: int = 1) -> str:
  """cells {(*row, column): [value per seed]} -> markdown 'mean ± std' per row and column.

  A cell with a seed count other than the table's most common one says its n; a missing
  cell is '-'. row_order: sort key of the row tuples (default: sorted as they are).
  """
  columns = sorted({k[-1] for k in cells})
  rows = sorted({k[:-1] for k in cells}, key=row_order)
  counts = collections.Counter(len(v) for v in cells.values())
  usual = counts.most_common(1)[0][0] if counts else 0
  lines = ["| " + " | ".join(row_header) + " | " + " | ".join(str(c) for c in columns) + " |",
           "|" + "---|" * (len(row_header) + len(columns))]
  for row in rows:
    texts = []
    for c in columns:
      v = cells.get((*row, c))
      if not v:
        texts.append("-")
        continue
      m, s = mean_std(v)
      texts.append(f"{m:.{digits}f} ± {s:.{digits}f}" + (f" (n={len(v)})" if len(v) != usual
                                                         else ""))
    lines.append("| " + " | ".join(str(r) for r in row) + " | " + " | ".join(texts) + " |")
  return "\n".join(lines)

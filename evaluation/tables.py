"""Markdown tables in the shape of the posts' tables."""
from __future__ import annotations


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

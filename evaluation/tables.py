"""Markdown tables in the shape of the posts' tables."""
from __future__ import annotations

import collections
import math


def length_table(rows: list[tuple[str, dict]], metric: str = "accuracy", percent: bool = True,
                 digits: int = 2, refused: dict | None = None) -> str:
  """rows: [(name, {length: {metric: value}})] -> '| run | 64 | 128 | ...' markdown.

  A length missing from a run is shown as '-', or as 'refused' where refused {name: lengths}
  says the run's model cannot encode it (a length-bound model).
  """
  refused = {name: {int(n) for n in ns} for name, ns in (refused or {}).items()}
  lengths = sorted({int(n) for _, res in rows for n in res} |
                   {n for ns in refused.values() for n in ns})
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
        cells.append("refused" if n in refused.get(name, ()) else "-")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (n - 1; 0 for a single value)."""
  n = len(values)
  m = sum(values) / n
  return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def seed_table(cells: dict, row_header: list[str], row_order=None, digits: int = 1) -> str:
  """cells {(*row, column): [value per seed]} -> markdown 'mean ± std' per row and column.

  A cell with a seed count other than the table's most common one, or of a single seed (no
  ±: one value has no spread), says its n; a missing cell is '-'. row_order: sort key of the row tuples (default: sorted as they are).
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
      # one seed has no spread to report: '± 0.00' would read as a measured zero
      spread = f" ± {s:.{digits}f}" if len(v) > 1 else ""
      texts.append(f"{m:.{digits}f}{spread}" + (f" (n={len(v)})" if len(v) != usual or
                                                len(v) == 1 else ""))
    lines.append("| " + " | ".join(str(r) for r in row) + " | " + " | ".join(texts) + " |")
  return "\n".join(lines)


def paired_difference(base: dict, other: dict, confidence: float = 0.95) -> dict | None:
  """{seed: value} of two rows -> the mean of other - base over the seeds both have, with the
  Student-t interval for that mean (n - 1 degrees of freedom; none for a single pair).

  Returns {'mean', 'low', 'high', 'n'} (low = high = nan when n = 1), or None without a pair.
  """
  seeds = sorted(set(base) & set(other))
  if not seeds:
    return None
  # imported here: scipy.stats takes a second to import, and every training process imports
  # this module (for its end-of-run table) while only a table with a baseline needs it
  from scipy import stats
  diffs = [other[s] - base[s] for s in seeds]
  m, sd = mean_std(diffs)
  n = len(diffs)
  half = (stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
  return {"mean": m, "low": m - half, "high": m + half, "n": n}


def _signed(value: float, digits: int) -> str:
  return f"{value:+.{digits}f}"


def difference_text(d: dict | None, digits: int) -> str:
  """'+0.65 [-1.20, +2.50] (3 pairs)'; a single pair has no interval: '+0.65 (1 pair)'."""
  if d is None:
    return "-"
  if d["n"] == 1:
    return f"{_signed(d['mean'], digits)} (1 pair)"
  return (f"{_signed(d['mean'], digits)} [{_signed(d['low'], digits)}, "
          f"{_signed(d['high'], digits)}] ({d['n']} pairs)")


def seed_length_table(rows: list[tuple[str, dict]], *, digits: int = 2,
                      baseline: str | dict | None = None,
                      plain_rows=(), confidence: float = 0.95,
                      refused: dict | None = None) -> tuple[str, list[str]]:
  """rows [(label, {length: {seed: value}})] -> (markdown, notes).

  One row per label, cells 'mean ± std (n=k)' per length (the sample std, n - 1; a single
  value is 'mean (n=1)'); '-' where a row has no value at a length. plain_rows [(label,
  {length: value})] follow as they are (e.g. log n). baseline (a label of rows): one more row
  per other row, 'label - baseline', with the difference per length paired by seed (the
  comparisons of docs/techniques.md section 7 run over seeds) as 'mean [low, high] (n pairs)'
  at the given confidence. baseline may instead be {label: its baseline's label}: each such
  row gets its own baseline (log-n minus standard within each position encoding).
  notes: one line per difference row whose seeds are not all paired, naming
  the seeds left out. refused {label: lengths}: the lengths a row's model cannot encode, shown
  as 'refused' (its difference rows show '-' there).
  """
  refused = {label: {int(n) for n in ns} for label, ns in (refused or {}).items()}
  labels = [label for label, _ in rows]
  pairs = ({label: baseline for label in labels if label != baseline}
           if isinstance(baseline, str) else dict(baseline or {}))
  missing = {b for b in [*pairs, *pairs.values()] if b not in labels}
  if missing:
    raise ValueError(f"baseline: {', '.join(map(repr, sorted(missing)))} not a row of {labels}")
  by_label = {label: {int(n): v for n, v in cells.items()} for label, cells in rows}
  lengths = sorted({n for cells in by_label.values() for n in cells} |
                   {int(n) for _, cells in plain_rows for n in cells} |
                   {n for ns in refused.values() for n in ns})
  lines = ["| run | " + " | ".join(str(n) for n in lengths) + " |", "|---|" + "---|" * len(lengths)]

  def line(label, texts):
    lines.append(f"| {label} | " + " | ".join(texts) + " |")

  for label in labels:
    texts = []
    for n in lengths:
      values = list(by_label[label].get(n, {}).values())
      if not values:
        texts.append("refused" if n in refused.get(label, ()) else "-")
        continue
      m, sd = mean_std(values)
      texts.append(f"{m:.{digits}f} ± {sd:.{digits}f} (n={len(values)})" if len(values) > 1
                   else f"{m:.{digits}f} (n=1)")
    line(label, texts)
  for label, cells in plain_rows:
    cells = {int(n): v for n, v in cells.items()}
    line(label, [f"{cells[n]:.{digits}f}" if n in cells else "-" for n in lengths])
  notes = []
  for label in [label for label in labels if label in pairs]:
    base, other = by_label[pairs[label]], by_label[label]
    name = f"{label} - {pairs[label]}"
    line(name, [difference_text(paired_difference(base.get(n, {}), other.get(n, {}), confidence),
                                digits) for n in lengths])
    # a length that one row has no value at (refused, or not evaluated) pairs no seed there
    both = [n for n in lengths if base.get(n) and other.get(n)]
    unpaired = sorted({s for n in both for s in set(base[n]) ^ set(other[n])})
    if unpaired:
      notes.append(f"{name}: seed{'s' if len(unpaired) > 1 else ''} "
                   f"{', '.join(str(s) for s in unpaired)} without a pair, left out")
  return "\n".join(lines), notes

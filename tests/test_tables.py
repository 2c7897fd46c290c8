"""evaluation/tables.length_table against hand-written markdown."""
from __future__ import annotations

from evaluation.tables import length_table

# as read back from eval.json (string lengths) or fresh (int lengths); "learned" refused 512
ROWS = [
    ("rope", {"64": {"accuracy": 0.5, "loss": 1.23456}, "512": {"accuracy": 0.123456,
                                                                "loss": 2.0}}),
    ("learned", {64: {"accuracy": 0.98766, "loss": 0.1}, 1024: {"accuracy": 0.07, "loss": 4.5}}),
]


def test_percent_two_digits_and_missing_lengths():
  # lengths in numeric order (as text, 1024 would sort before 512 and 64)
  assert length_table(ROWS) == "\n".join([
      "| run | 64 | 512 | 1024 |",
      "|---|---|---|---|",
      "| rope | 50.00 | 12.35 | - |",
      "| learned | 98.77 | - | 7.00 |",
  ])


def test_other_metric_without_percent():
  assert length_table(ROWS, metric="loss", percent=False, digits=3) == "\n".join([
      "| run | 64 | 512 | 1024 |",
      "|---|---|---|---|",
      "| rope | 1.235 | 2.000 | - |",
      "| learned | 0.100 | - | 4.500 |",
  ])
  assert length_table([("x", {128: {"accuracy": 0.25}})], digits=0) == (
      "| run | 128 |\n|---|---|\n| x | 25 |")

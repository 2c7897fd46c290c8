"""evaluation/tables.py against hand-written markdown; paired differences against scipy."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from evaluation.tables import length_table, paired_difference, seed_length_table

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


def test_refused_lengths_say_so():
  # a length-bound run's refused lengths read 'refused'; a length merely not evaluated, '-'
  assert length_table(ROWS, refused={"learned": [512]}).splitlines()[3] == (
      "| learned | 98.77 | refused | 7.00 |")
  assert length_table([("a", {64: {"accuracy": 0.5}})], refused={"a": [128]}) == (
      "| run | 64 | 128 |\n|---|---|---|\n| a | 50.00 | refused |")


def test_other_metric_without_percent():
  assert length_table(ROWS, metric="loss", percent=False, digits=3) == "\n".join([
      "| run | 64 | 512 | 1024 |",
      "|---|---|---|---|",
      "| rope | 1.235 | 2.000 | - |",
      "| learned | 0.100 | - | 4.500 |",
  ])
  assert length_table([("x", {128: {"accuracy": 0.25}})], digits=0) == (
      "| run | 128 |\n|---|---|\n| x | 25 |")


def test_paired_difference_is_the_paired_t_interval():
  base = {0: 60.1, 1: 58.4, 2: 63.0, 3: 61.7, 7: 50.0}  # seed 7 has no pair
  other = {0: 61.0, 1: 60.2, 2: 62.1, 3: 64.9, 9: 99.0}  # nor has seed 9
  d = paired_difference(base, other)
  a, b = [other[s] for s in (0, 1, 2, 3)], [base[s] for s in (0, 1, 2, 3)]
  ci = stats.ttest_rel(a, b).confidence_interval(0.95)
  assert d["n"] == 4 and d["mean"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 4)
  assert (d["low"], d["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
  # the same from the t quantile: mean ± t(0.975, n - 1) * sd / sqrt(n)
  diffs = [x - y for x, y in zip(a, b)]
  sd = math.sqrt(sum((x - d["mean"]) ** 2 for x in diffs) / 3)
  assert d["high"] - d["mean"] == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2)
  assert paired_difference(base, other, confidence=0.9)["high"] < d["high"]
  one = paired_difference({0: 1.0}, {0: 3.5, 1: 2.0})
  assert one["n"] == 1 and one["mean"] == 2.5 and math.isnan(one["low"])
  assert paired_difference({0: 1.0}, {1: 2.0}) is None


def test_seed_length_table_by_hand():
  rows = [("scale=standard", {64: {0: 60.0, 1: 62.0, 2: 64.0}, "128": {0: 50.0, 1: 54.0}}),
          ("scale=logn", {64: {0: 61.0, 1: 64.0, 2: 67.0}, 128: {0: 50.0, 3: 40.0}}),
          ("position=t5", {64: {5: 70.0}})]
  text, notes = seed_length_table(rows, baseline="scale=standard",
                                  plain_rows=[("log n", {64: 4.1589, 128: 4.852})])
  # logn - standard at 64: differences 1, 2, 3 -> mean 2, sd 1, t(0.975, 2) / sqrt(3) * 1
  half = stats.t.ppf(0.975, 2) / math.sqrt(3)
  assert round(half, 2) == 2.48
  assert text.splitlines() == [
      "| run | 64 | 128 |",
      "|---|---|---|",
      "| scale=standard | 62.00 ± 2.00 (n=3) | 52.00 ± 2.83 (n=2) |",
      "| scale=logn | 64.00 ± 3.00 (n=3) | 45.00 ± 7.07 (n=2) |",
      "| position=t5 | 70.00 (n=1) | - |",
      "| log n | 4.16 | 4.85 |",
      "| scale=logn - scale=standard | +2.00 [-0.48, +4.48] (3 pairs) | +0.00 (1 pair) |",
      "| position=t5 - scale=standard | - | - |",
  ]
  assert notes == ["scale=logn - scale=standard: seeds 1, 3 without a pair, left out",
                   "position=t5 - scale=standard: seeds 0, 1, 2, 5 without a pair, left out"]
  plain, none = seed_length_table(rows[:1], digits=1)
  assert plain.splitlines()[2] == "| scale=standard | 62.0 ± 2.0 (n=3) | 52.0 ± 2.8 (n=2) |"
  assert none == []
  with pytest.raises(ValueError, match="not a row"):
    seed_length_table(rows, baseline="scale=none")


def test_seed_length_table_refused_lengths():
  # learned positions trained at 64 cannot encode 128: 'refused', no difference there, and
  # no seed counted as unpaired for it; differences -1, +1: sd sqrt(2), t(0.975, 1) = 12.71
  rows = [("position=rope", {64: {0: 60.0, 1: 62.0}, 128: {0: 50.0, 1: 52.0}}),
          ("position=learned", {64: {0: 59.0, 1: 63.0}})]
  text, notes = seed_length_table(rows, baseline="position=rope",
                                  refused={"position=learned": [128]})
  assert text.splitlines()[3:] == [
      "| position=learned | 61.00 ± 2.83 (n=2) | refused |",
      "| position=learned - position=rope | +0.00 [-12.71, +12.71] (2 pairs) | - |"]
  assert notes == []

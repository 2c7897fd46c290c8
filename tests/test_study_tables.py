"""The MLM study's tables (training/mlm.py table), summaries and plots, and the progress bar.

Workdirs are laid out by hand (config.json from the config file, a checkpoint directory, the
saved evaluation), so the tables are checked against numbers chosen in the test: the seed
groups and their labels by hand, the paired differences against scipy's paired t-test; the
tables from summary.json files against the tables from the workdirs, also through
evaluate.py --summaries.
"""
import json
import math
import os
import statistics
import sys

import pytest
from entry_points import call_main
from scipy import stats

from configs import mlm_extrapolation
from evaluation.plots import length_figure
from training import mlm
from training import workdir as wd
from utils.errors import UserError

# accuracy at length 32 by (scale, seed); at 64 it is 0.1 lower. Seed 2 of standard and seed 3
# of logn have no partner.
ACCURACY = {("standard", 0): 0.600, ("standard", 1): 0.620, ("standard", 2): 0.580,
            ("logn", 0): 0.630, ("logn", 1): 0.610, ("logn", 3): 0.660}
ENTROPY = {"standard": 2.0, "logn": 1.5}  # at 32; + 0.5 at 64, + 0.01 * seed


def _lay_out(root, scale, seed, accuracy, steps_done=6, position=None):
  where = f"position-{position}_" if position else ""
  w = os.path.join(root, f"{where}scale-{scale}_seed-{seed}")
  at = f",position={position}" if position else ""
  wd.prepare(w, mlm_extrapolation.get_config(f"smoke,scale={scale},seed={seed}{at}"))
  os.makedirs(os.path.join(w, "checkpoints", str(steps_done)))
  lengths = {"32": {"accuracy": accuracy, "loss": 2.0 - accuracy},
             "64": {"accuracy": accuracy - 0.1, "loss": 2.1 - accuracy}}
  with open(os.path.join(w, "eval.json"), "w") as f:
    json.dump({"step": steps_done, "lengths": lengths, "refused": []}, f)
  entropy = {n: {"entropy": ENTROPY[scale] + 0.5 * i + 0.01 * seed, "per_layer": [],
                 "log_n": math.log(int(n))} for i, n in enumerate(("32", "64"))}
  with open(os.path.join(w, "entropy.json"), "w") as f:
    json.dump({"step": steps_done, "lengths": entropy, "refused": []}, f)
  return w


@pytest.fixture
def runs(tmp_path):
  return [_lay_out(str(tmp_path / "runs"), scale, seed, a) for (scale, seed), a in ACCURACY.items()]


def _cell(values):
  return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def test_seeds_grouped_labelled_and_compared_with_a_baseline(runs):
  std = [100 * ACCURACY["standard", s] for s in (0, 1, 2)]
  logn = [100 * ACCURACY["logn", s] for s in (0, 1, 3)]
  lines = mlm.table(runs).splitlines()
  assert lines == [
      "MLM accuracy (%) by evaluation length, mean ± std over seeds:",
      "| run | 32 | 64 |", "|---|---|---|",
      f"| scale=standard | {_cell(std)} | {_cell([v - 10 for v in std])} |",
      f"| scale=logn | {_cell(logn)} | {_cell([v - 10 for v in logn])} |"]
  # the baseline as a row label, a workdir, or a run's name: the same table
  text = mlm.table(runs, baseline="scale=standard")
  assert text == mlm.table(runs, baseline=runs[1])
  assert text == mlm.table(runs, baseline="scale-standard_seed-2")
  diff = [line for line in text.splitlines() if line.startswith("| scale=logn - ")]
  # seeds 0 and 1 are paired; scipy's paired t-test gives the interval
  a = [100 * ACCURACY["logn", s] for s in (0, 1)]
  b = [100 * ACCURACY["standard", s] for s in (0, 1)]
  ci = stats.ttest_rel(a, b).confidence_interval(0.95)
  mean = statistics.mean(x - y for x, y in zip(a, b))
  cell = f"{mean:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] (2 pairs)"
  assert diff == [f"| scale=logn - scale=standard | {cell} | {cell} |"]
  assert text.endswith("scale=logn - scale=standard: seeds 2, 3 without a pair, left out")
  with pytest.raises(UserError, match="neither a row of the table"):
    mlm.table(runs, baseline="scale=cosine")
  loss = mlm.table(runs, metric="loss").splitlines()
  assert loss[0] == "MLM loss by evaluation length, mean ± std over seeds:"
  assert loss[3].startswith("| scale=standard | "
                            f"{_cell([2.0 - ACCURACY['standard', s] for s in (0, 1, 2)])} |")


def test_a_baseline_by_values_pairs_each_row_with_its_own(tmp_path):
  """--baseline scale=standard on a grid: log-n minus standard within each position encoding,
  paired by seed (scipy's paired t-test for the interval); a row with no standard partner
  (alibi has only log-n here) gets no difference row; values no row has are refused."""
  acc = {("rope", "standard"): [0.50, 0.54, 0.47], ("rope", "logn"): [0.53, 0.58, 0.49],
         ("t5", "standard"): [0.40, 0.45, 0.41], ("t5", "logn"): [0.39, 0.44, 0.43],
         ("alibi", "logn"): [0.30, 0.31, 0.35]}
  runs = [_lay_out(str(tmp_path), scale, seed, a, position=position)
          for (position, scale), values in acc.items() for seed, a in enumerate(values)]
  text = mlm.table(runs, baseline="scale=standard")
  diffs = [line for line in text.splitlines() if " - " in line and line.startswith("|")]
  expected = []
  for position in ("rope", "t5"):
    a, b = [100 * v for v in acc[position, "logn"]], [100 * v for v in acc[position, "standard"]]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    mean = statistics.mean(x - y for x, y in zip(a, b))
    cell = f"{mean:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] (3 pairs)"
    expected.append(f"| position={position},scale=logn - position={position},scale=standard | "
                    f"{cell} | {cell} |")
  assert sorted(diffs) == sorted(expected)
  assert "the row with scale=standard and the same other values" in text
  with pytest.raises(UserError, match="values of the rows' keys"):
    mlm.table(runs, baseline="scale=cosine")
  with pytest.raises(UserError, match="values of the rows' keys"):
    mlm.table(runs, baseline="width=64")


def test_runs_without_seed_groups_are_one_row_each(runs, tmp_path):
  # one seed per config: the single-run table, rows named by the runs
  assert mlm.table([runs[0], runs[3]]).splitlines()[3:] == [
      "| scale-standard_seed-0 (rope, standard) | 60.00 | 50.00 |",
      "| scale-logn_seed-0 (rope, logn) | 63.00 | 53.00 |"]
  # the same run twice cannot be two seeds of a row
  twin = _lay_out(str(tmp_path / "twin"), "standard", 1, 0.5)
  with pytest.raises(UserError, match="the same run twice .* seed 1"):
    mlm.table(runs + [twin])
  # a difference outside the seed labels the rows by every key that differs
  other = _lay_out(str(tmp_path / "other"), "logn", 0, 0.5)
  config = wd.load_config(other)
  config.train.steps, config.model.position = 12, "t5"
  with open(os.path.join(other, "config.json"), "w") as f:
    json.dump(wd.config_to_dict(config), f)
  labels = [line.split(" | ")[0] for line in mlm.table(runs + [other]).splitlines()[3:]]
  assert labels == ["| position=rope,scale=standard,train.steps=6",
                    "| position=rope,scale=logn,train.steps=6",
                    "| position=t5,scale=logn,train.steps=12"]


def test_summaries_tabulate_as_the_workdirs(runs, tmp_path, capsys):
  # evaluating (here: reading the saved results) writes each finished run's summary
  by_workdirs = mlm.table(runs, baseline="scale=standard")
  entropy_workdirs = [mlm.write_summary(w) for w in runs]
  summaries = [os.path.join(w, "summary.json") for w in runs]
  for w, path in zip(runs, summaries):
    with open(path) as f:
      s = json.load(f)
    with open(os.path.join(w, "eval.json")) as f:
      assert s["lengths"] == json.load(f)["lengths"]
    with open(os.path.join(w, "config.json")) as f:
      assert s["config"] == json.load(f) and s["seed"] == s["config"]["seed"]
    assert s["step"] == 6 and s["entropy"]["32"]["entropy"] == pytest.approx(
        ENTROPY[s["config"]["model"]["scale"]] + 0.01 * s["seed"])
  assert entropy_workdirs[0]["name"] == "scale-standard_seed-0"
  assert mlm.table(summaries, baseline="scale=standard") == by_workdirs
  assert mlm.table(summaries, baseline=runs[0]) == by_workdirs  # its workdir names the run
  assert mlm.table(summaries, baseline=summaries[2]) == by_workdirs  # and so does its path
  assert mlm.table(summaries, metric="loss") == mlm.table(runs, metric="loss")
  text = mlm.table(summaries, entropy=True).splitlines()
  assert text[0] == "Mean attention entropy (nats) by evaluation length, mean ± std over seeds:"
  assert text[3] == (f"| scale=standard | {statistics.mean([2.0, 2.01, 2.02]):.3f} ± "
                     f"{statistics.stdev([2.0, 2.01, 2.02]):.3f} (n=3) | 2.510 ± 0.010 (n=3) |")
  assert text[5] == f"| log n (uniform attention) | {math.log(32):.3f} | {math.log(64):.3f} |"
  assert mlm.table(summaries, lengths=[64]) == mlm.table(runs, lengths=[64])
  assert mlm.table(summaries, lengths=[64]).splitlines()[1] == "| run | 64 |"
  # only the saved lengths, and no model overrides, from a summary
  with pytest.raises(UserError, match=r"has no result at lengths \[128\]"):
    mlm.table(summaries, lengths=[32, 128])
  with pytest.raises(UserError, match="needs the checkpoints"):
    mlm.table(summaries, model_override=["scale=standard"])
  # an unfinished run writes no summary
  short = _lay_out(str(tmp_path / "short"), "logn", 5, 0.5, steps_done=3)
  assert mlm.write_summary(short) is None and not os.path.exists(
      os.path.join(short, "summary.json"))

  # evaluate.py (its main, in this process): the same table from the summaries alone, and
  # its plot
  plot = str(tmp_path / "accuracy.png")
  capsys.readouterr()
  assert call_main("evaluate", "--summaries", *summaries, "--table",
                   "--baseline=scale=standard", f"--plot={plot}") == 0
  assert capsys.readouterr().out.rstrip("\n") == by_workdirs
  with open(plot, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_summary_keeps_its_commit_until_its_content_changes(runs, monkeypatch):
  w = runs[0]
  monkeypatch.setattr(mlm, "code_version", lambda: {"hash": "a" * 40, "dirty": False})
  first = mlm.write_summary(w, training={"seconds": 1.0})
  monkeypatch.setattr(mlm, "code_version", lambda: {"hash": "b" * 40, "dirty": True})
  again = mlm.write_summary(w)  # nothing new: the numbers came from the first commit
  assert again == first and again["commit"]["hash"] == "a" * 40
  assert again["training"] == {"seconds": 1.0}  # kept when not given
  with open(os.path.join(w, "eval.json")) as f:
    evaluation = json.load(f)
  evaluation["lengths"]["32"]["accuracy"] = 0.75
  with open(os.path.join(w, "eval.json"), "w") as f:
    json.dump(evaluation, f)
  changed = mlm.write_summary(w)
  assert changed["commit"]["hash"] == "b" * 40 and changed["lengths"]["32"]["accuracy"] == 0.75


def test_length_plot_draws_means_and_stds_on_a_log2_axis():
  rows = [("scale=standard", {64: [60.0, 62.0, 64.0], 256: [50.0, 54.0]}),
          ("scale=logn", {64: [61.0], 256: [55.0]})]
  fig = length_figure(rows, "t", "accuracy", reference=("log n", {64: 4.16, 256: 5.55}))
  ax = fig.axes[0]
  assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
  bars = ax.containers  # one errorbar container per row
  assert [c.get_label() for c in bars] == ["scale=standard", "scale=logn"]
  line, _, (segments,) = bars[0]
  assert list(line.get_xdata()) == [64, 256] and list(line.get_ydata()) == [62.0, 52.0]
  # error bars from mean - std to mean + std (statistics.stdev: n - 1)
  spans = [(seg[0][1], seg[1][1]) for seg in segments.get_segments()]
  assert spans == [pytest.approx((62.0 - 2.0, 62.0 + 2.0)),
                   pytest.approx((52.0 - statistics.stdev([50, 54]), 52.0 +
                                  statistics.stdev([50, 54])))]
  reference = [li for li in ax.lines if li.get_label() == "log n"]
  assert list(reference[0].get_ydata()) == [4.16, 5.55]


class _Terminal:
  """A stream that says it is a terminal, recording what a progress bar writes."""

  def __init__(self, tty=True):
    self.text, self.tty = "", tty

  def write(self, s):
    self.text += s

  def flush(self):
    pass

  def isatty(self):
    return self.tty


def test_long_evaluations_show_a_bar_on_a_terminal_only(tmp_path, monkeypatch):
  config = mlm_extrapolation.get_config("smoke,lengths=32+64+128")
  model = mlm.MlmModel(mlm.model_config(config, vocab_size=8))
  loaded = wd.LoadedRun(config, model, None, None, 6)
  out = str(tmp_path / "eval.json")
  score = lambda ns: {n: {"accuracy": 1.0 / n} for n in ns}  # noqa: E731
  for tty, enabled, shown in [(True, True, True), (True, False, False), (False, True, False)]:
    stream = _Terminal(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    result = mlm._by_length(str(tmp_path), loaded, None, out, score, enabled)
    assert result["lengths"] == {"32": {"accuracy": 1 / 32}, "64": {"accuracy": 1 / 64},
                                 "128": {"accuracy": 1 / 128}}
    assert ("eval: 100%" in stream.text and "3/3" in stream.text) is shown, stream.text
    assert ("length=128" in stream.text) is shown  # the length in progress


def _set_model(workdir, **fields):
  config = wd.load_config(workdir)
  config.model.update(fields)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(wd.config_to_dict(config), f)


def test_labels_leave_out_a_key_that_a_finer_one_fixes(tmp_path):
  # learned rows have their own max_len (the training length), every rope row another:
  # position alone tells the rows apart, so max_len is not in the labels
  root = str(tmp_path)
  rope = [_lay_out(os.path.join(root, "rope"), "standard", s, 0.6) for s in (0, 1)]
  t5 = [_lay_out(os.path.join(root, "t5"), "standard", s, 0.55) for s in (0, 1)]
  learned = [_lay_out(os.path.join(root, "learned"), "standard", s, 0.5) for s in (0, 1)]
  for w in t5:
    _set_model(w, position="t5")
  for w in learned:
    _set_model(w, position="learned", max_len=32)
  runs = rope + t5 + learned
  labels = [line.split(" | ")[0] for line in mlm.table(runs).splitlines()[3:]]
  assert labels == ["| position=rope", "| position=t5", "| position=learned"]
  # two rows only: position and max_len tell them apart equally well, so both stay
  labels = [line.split(" | ")[0] for line in mlm.table(rope + learned).splitlines()[3:]]
  assert labels == ["| max_len=128,position=rope", "| max_len=32,position=learned"]
  # a rope row with max_len=32 too: max_len no longer follows from position, so it stays
  short = _lay_out(os.path.join(root, "short"), "standard", 0, 0.4)
  _set_model(short, max_len=32)
  labels = [line.split(" | ")[0] for line in mlm.table(runs + [short]).splitlines()[3:]]
  assert labels == ["| max_len=128,position=rope", "| max_len=128,position=t5",
                    "| max_len=32,position=learned", "| max_len=32,position=rope"]


def test_grid_rows_share_a_colour_per_position_and_a_line_style_per_scale():
  from evaluation.plots import row_styles
  labels = ["position=rope,scale=logn", "position=rope,scale=standard",
            "position=t5,scale=logn", "position=t5,scale=standard"]
  assert row_styles(labels) == [("C0", "-"), ("C0", "--"), ("C1", "-"), ("C1", "--")]
  # one key: one colour per row, solid
  assert row_styles(["scale=standard", "scale=logn"]) == [("C0", "-"), ("C1", "-")]

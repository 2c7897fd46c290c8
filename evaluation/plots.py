"""Plots of result tables (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from evaluation.tables import mean_std

# one colour, marker and line style per accumulation mode, the same in every panel
MODE_STYLES = {"none": ("C0", "o", "-"), "exact": ("C1", "s", "--"), "naive": ("C2", "^", ":")}


def batch_plot(cells: dict, path: str, title: str,
               ylabel: str = "STS Spearman x100 (mean ± std over seeds)",
               xlabel: str = "batch size (examples)", base: int = 2) -> None:
  """cells {(loss, series, x): [value per seed]} -> one panel per loss, value vs x (log axis
  of this base), one line with error bars per series: an accumulation mode (styled as
  MODE_STYLES) or any other label; saved as an image at path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  losses = sorted({k[0] for k in cells})
  xs = sorted({k[2] for k in cells})
  series = sorted({k[1] for k in cells}, key=lambda m: (m not in MODE_STYLES, list(
      MODE_STYLES).index(m) if m in MODE_STYLES else 0, m))
  fig, axes = plt.subplots(1, len(losses), figsize=(5.5 * len(losses), 4), sharey=True,
                           squeeze=False)
  for ax, loss in zip(axes[0], losses):
    for i, mode in enumerate(series):
      color, marker, line = MODE_STYLES.get(mode, (f"C{i % 10}", "os^Dv<>"[i % 7], "-"))
      points = sorted((b, mean_std(v)) for (l, m, b), v in cells.items() if l == loss and m == mode)
      if not points:
        continue
      ax.errorbar([b for b, _ in points], [ms[0] for _, ms in points],
                  yerr=[ms[1] for _, ms in points], color=color, marker=marker, linestyle=line,
                  capsize=3, label=f"accumulation={mode}" if mode in MODE_STYLES else mode)
    ax.set_xscale("log", base=base)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title}: {loss}")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def length_figure(rows, title: str, ylabel: str, reference=None):
  """rows [(label, {length: [value per seed]})] -> a figure of value vs evaluation length
  (log2 axis), one line per row with the seeds' mean and error bars of their std (none for a
  single seed); reference (label, {length: value}), e.g. log n, is drawn dashed and grey."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  many = len(rows) > 8
  fig, ax = plt.subplots(figsize=(9.0 if many else 6.5, 4.8 if many else 4.2))
  lengths = sorted({int(n) for _, cells in rows for n in cells})
  for (label, cells), (color, line) in zip(rows, row_styles([label for label, _ in rows])):
    points = sorted((int(n), mean_std(v)) for n, v in cells.items() if v)
    ax.errorbar([n for n, _ in points], [ms[0] for _, ms in points],
                yerr=[ms[1] for _, ms in points], color=color, linestyle=line, marker="o",
                capsize=3, label=label)
  if reference is not None:
    name, values = reference
    points = sorted((int(n), v) for n, v in values.items())
    ax.plot([n for n, _ in points], [v for _, v in points], color="0.5", linestyle="--",
            label=name)
  ax.set_xscale("log", base=2)
  ax.set_xticks(lengths, [str(n) for n in lengths])
  ax.set_xlabel("evaluation length (tokens)")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if many:  # beside the axes, where it hides no line
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
  else:
    ax.legend(fontsize="small")
  fig.tight_layout()
  return fig


LINE_STYLES = ("-", "--", ":", "-.")


def row_styles(labels) -> list[tuple[str, str]]:
  """(colour, line style) per row label. Labels 'k1=v1,...,kn=vn' of two or more keys share a
  colour when they agree on all keys but the last and a line style when they agree on the
  last (a grid of position x scale: one colour per position, solid / dashed per scale);
  otherwise one colour per row."""
  parts = [label.split(",") for label in labels]
  if len(parts) > 1 and all(len(p) >= 2 and "=" in p[-1] for p in parts):
    heads = list(dict.fromkeys(",".join(p[:-1]) for p in parts))
    lasts = list(dict.fromkeys(p[-1] for p in parts))
    if len(lasts) <= len(LINE_STYLES):
      return [(f"C{heads.index(','.join(p[:-1])) % 10}",
               LINE_STYLES[lasts.index(p[-1])]) for p in parts]
  return [(f"C{i % 10}", "-") for i in range(len(labels))]


def length_plot(rows, path: str, title: str, ylabel: str, reference=None) -> None:
  """length_figure(...) saved as an image at path."""
  import matplotlib.pyplot as plt
  fig = length_figure(rows, title, ylabel, reference)
  fig.savefig(path, dpi=110)
  plt.close(fig)

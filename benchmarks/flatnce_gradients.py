r"""FlatNCE's claim, measured on the losses themselves: InfoNCE's per-row gradient is FlatNCE's
times xi / (1 + xi) (xi = sum_{j != t} e^{s_j - s_t}, docs/techniques.md section 6), so as a
row becomes easy (xi -> 0) InfoNCE's gradient shrinks with xi and, in floating point, its
positive-logit component 1 / (1 + xi) - 1 rounds to exactly zero once xi is below half the
format's epsilon (2^-24 in float32, 2^-8 in bfloat16); FlatNCE's gradient keeps its size.

For each xi on a log grid, one row of logits per batch size (positive s_t = 0, the B - 1
negatives equal, at log(xi / (B - 1))) is cast to the dtype, and the gradients of this
codebase's `objectives.contrastive.infonce` / `flatnce` with respect to the logits are taken in
that dtype. Each is compared with the exact gradient of the same (cast) logits in float64.

  python benchmarks/flatnce_gradients.py --out docs/results/flatnce_mechanism.md \
      --plot docs/results/flatnce_mechanism.png

No training: a few seconds of CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import describe_machine  # noqa: E402
from objectives.contrastive import flatnce, infonce  # noqa: E402

LOSSES = {"infonce": infonce, "flatnce": flatnce}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def rows(xis, batch: int, dtype) -> jnp.ndarray:
  """One row per xi: positive logit 0 at column 0, the negatives equal, summing to xi."""
  neg = np.log(np.asarray(xis, np.float64) / (batch - 1))
  logits = np.zeros((len(xis), batch))
  logits[:, 1:] = neg[:, None]
  return jnp.asarray(logits, dtype)


def exact_gradients(logits: np.ndarray) -> dict[str, np.ndarray]:
  """float64 per-row gradients of both losses with respect to the logits (positive at 0).

  InfoNCE: softmax(s) - onehot(t). FlatNCE (gradient of log xi): softmax over the negatives,
  -1 at the positive. So grad InfoNCE = xi / (1 + xi) * grad FlatNCE, row by row.
  """
  s = logits.astype(np.float64)
  p = np.exp(s - s.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  info = p.copy()
  info[:, 0] -= 1.0
  q = np.exp(s[:, 1:] - s[:, 1:].max(axis=1, keepdims=True))
  q /= q.sum(axis=1, keepdims=True)
  flat = np.concatenate([-np.ones((len(s), 1)), q], axis=1)
  return {"infonce": info, "flatnce": flat}


def measured_gradients(logits, loss_fn) -> np.ndarray:
  """Per-row gradient of loss_fn in the logits' dtype (the losses average over rows, so the
  gradient of the sum of rows is that mean times the row count)."""
  targets = jnp.zeros((logits.shape[0],), jnp.int32)
  grad = jax.jit(jax.grad(lambda s: loss_fn(s, targets)[0] * s.shape[0]))(logits)
  return np.asarray(grad.astype(jnp.float32), np.float64)


def measure(xis, batches=(8, 64)) -> list[dict]:
  """One record per (dtype, batch, loss, xi): measured and exact per-row gradient norms and the
  positive-logit component."""
  out = []
  for dname, dtype in DTYPES.items():
    for b in batches:
      logits = rows(xis, b, dtype)
      cast = np.asarray(logits.astype(jnp.float32), np.float64)
      realized = np.exp(cast[:, 1:]).sum(axis=1)  # xi of the cast logits (s_t = 0)
      exact = exact_gradients(cast)
      for name, fn in LOSSES.items():
        g = measured_gradients(logits, fn)
        for i, xi in enumerate(xis):
          out.append({"dtype": dname, "batch": b, "loss": name, "xi": float(xi),
                      "xi_cast": float(realized[i]),
                      "norm": float(np.linalg.norm(g[i])),
                      "exact_norm": float(np.linalg.norm(exact[name][i])),
                      "positive": float(g[i, 0]), "exact_positive": float(exact[name][i, 0])})
  return out


def _cell(r) -> str:
  rel = r["norm"] / r["exact_norm"] if r["exact_norm"] else float("nan")
  return f"{r['norm']:.3g} ({rel:.3f}); {r['positive']:.3g}"


def table(records, batch: int) -> str:
  xis = sorted({r["xi"] for r in records}, reverse=True)
  cols = [(d, l) for d in DTYPES for l in LOSSES]
  by = {(r["dtype"], r["loss"], r["xi"]): r for r in records if r["batch"] == batch}
  head = "| xi | exact xi/(1+xi) | " + " | ".join(f"{l}, {d}" for d, l in cols) + " |"
  lines = [head, "|---|---|" + "---|" * len(cols)]
  for xi in xis:
    cells = [_cell(by[(d, l, xi)]) for d, l in cols]
    lines.append(f"| {xi:.0e} | {xi / (1 + xi):.3g} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(records, path: str, batch: int) -> None:
  """Left: the per-row gradient norm by xi; right: the positive logit's gradient (exact zeros
  drawn at a floor, marked), for each loss and dtype, with InfoNCE's exact values dotted."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
  styles = {("infonce", "float32"): "-o", ("infonce", "bfloat16"): "--s",
            ("flatnce", "float32"): "-^", ("flatnce", "bfloat16"): "--v"}
  floor = 1e-20  # an exact 0 on the log axis
  for ax, key, exact_key, what in ((axes[0], "norm", "exact_norm", "per-row gradient norm"),
                                   (axes[1], "positive", "exact_positive",
                                    f"|gradient of the positive logit| (0 drawn at {floor:g})")):
    for (loss, dtype), style in styles.items():
      rs = sorted((r for r in records if r["batch"] == batch and r["loss"] == loss
                   and r["dtype"] == dtype), key=lambda r: r["xi"])
      ax.plot([r["xi"] for r in rs], [max(abs(r[key]), floor) for r in rs], style, ms=4,
              label=f"{loss}, {dtype}")
    rs = sorted((r for r in records if r["batch"] == batch and r["loss"] == "infonce"
                 and r["dtype"] == "float32"), key=lambda r: r["xi"])
    ax.plot([r["xi"] for r in rs], [abs(r[exact_key]) for r in rs], ":", color="gray",
            label="infonce, exact (float64)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("xi = sum over negatives of exp(s_j - s_t)")
    ax.set_ylabel(what)
    ax.grid(alpha=0.3, which="both")
  axes[0].axvline(2.0 ** -24, color="k", lw=0.6)
  axes[1].axvline(2.0 ** -24, color="k", lw=0.6)
  axes[1].axhline(floor, color="r", lw=0.6)
  axes[0].legend(fontsize=8)
  fig.suptitle(f"InfoNCE vs FlatNCE gradient by xi (batch {batch}; vertical line: 2^-24)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="write the markdown report here")
  parser.add_argument("--plot", help="save the figure here (PNG)")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  xis = [10.0 ** e for e in range(1, -15, -1)]
  records = measure(xis)
  text = "\n\n".join(
      f"Batch {b}: per-row gradient norm (measured / exact); positive-logit component\n\n"
      + table(records, b) for b in (8, 64))
  footer = (f"\n\nMachine: {describe_machine()}. "
            f"Wall time {time.perf_counter() - start:.0f} s.")
  print(text + footer)
  if args.plot:
    plot(records, args.plot, batch=8)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text + footer + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())

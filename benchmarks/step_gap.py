"""Where the MLM train step's time beyond the bare-products stand-in goes, piece by piece.

  python benchmarks/performance.py --section gap [--gap_lengths 128,64] [--gap_rounds 5]
  python benchmarks/performance.py --section gap --quick      # tiny shapes: a check

The stand-in (mlm_throughput.bare_block_step) has exactly the encoder's matrix products and
nothing else. At its FLOP rate, measured in the same rounds, the step's own products (the MLM
head's included, mlm_throughput.matmul_flops) would take F_step / R seconds; the step's
excess is its time beyond that. Each variant is the same compiled train step (the throughput
model, random tokens) with ONE piece removed or swapped; its excess is its time beyond its
own products at the same rate, and the piece costs the full step's excess minus the
variant's. What the pieces do not add up to stays unexplained: pieces may overlap (the
constant mask also folds log-n's key count away) and removing one may change what XLA fuses.

Every step and both stand-ins are timed interleaved in one process (common.interleaved_times),
so that a busy spell of the machine hits all alike; each figure is the median over the rounds
of its per-round value. XLA's own count of each compiled step (cost_analysis: FLOPs, bytes
accessed) stands beside it, to tell the memory-bound pieces from the compute-bound ones.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

FULL, STANDIN, ELEMENTWISE = "full step", "stand-in: products alone", "stand-in: + softmax, GELU, norms"


# ----------------------------------------------------------------------------- the variants
# Interceptors (flax.linen.intercept_methods) change one kind of module call while the step
# is traced, so that a variant is the task's own loss, model and parameters with one piece
# gone: no copy of the model to keep in step with it.

def _constant_mask(next_fun, args, kwargs, context):
  """The encoder gets a compile-time all-true padding mask (the benchmark's rows have no
  padding), so the attention's masked select and log-n's key count fold into constants."""
  from model.encoder import Encoder
  if isinstance(context.module, Encoder) and context.method_name == "__call__":
    args = (args[0], np.ones(args[1].shape, bool), *args[2:])
  return next_fun(*args, **kwargs)


def _plain_norms(next_fun, args, kwargs, context):
  """Every LayerNorm as the stand-in's: no scale, no bias (their parameters get no gradient)."""
  from benchmarks.mlm_throughput import plain_norm
  if isinstance(context.module, nn.LayerNorm) and context.method_name == "__call__":
    return plain_norm(args[0], context.module.epsilon)
  return next_fun(*args, **kwargs)


def _no_biases(next_fun, args, kwargs, context):
  """Every Dense / DenseGeneral without its bias: the product with its kernel alone."""
  if isinstance(context.module, (nn.Dense, nn.DenseGeneral)) and context.method_name == "__call__":
    kernel = context.module.get_variable("params", "kernel")
    features = context.module.features
    outputs = len(features) if isinstance(features, (tuple, list)) else 1
    # the kernel's leading axes are the input's trailing ones (axis=-1, or (-2, -1) for the
    # attention's output projection)
    return jnp.tensordot(args[0], kernel, axes=kernel.ndim - outputs)
  return next_fun(*args, **kwargs)


def _frozen_embedding(next_fun, args, kwargs, context):
  """No gradient through the embedding: its lookup's scatter-add into the vocabulary table,
  and the backward of the embedding norm and dropout, are gone (the tied decoder still
  gives the table a gradient)."""
  from model.encoder import Encoder
  out = next_fun(*args, **kwargs)
  if isinstance(context.module, Encoder) and context.method_name == "embed":
    return jax.lax.stop_gradient(out)
  return out


def headless_loss(model, mask_rate: float):
  """The task's masking and encoder, then the mean square of the masked positions' hidden
  states instead of the MLM head and its cross-entropy."""
  from data.mlm import mlm_mask
  from data.tokenizers import PAD

  def loss(params, tokens, key):
    k_mask, k_drop = jax.random.split(key)
    inputs, positions, _, weights = mlm_mask(k_mask, tokens, vocab_size=model.cfg.vocab_size,
                                             rate=mask_rate)
    h = model.apply({"params": params}, inputs, tokens != PAD, deterministic=False,
                    rngs={"dropout": k_drop}, method=lambda m, *a, **k: m.encoder(*a, **k))
    h = jnp.take_along_axis(h, positions[..., None], axis=1)
    return jnp.mean(h * h * weights[..., None]), {"accuracy": jnp.zeros(())}

  return loss


@dataclasses.dataclass(frozen=True)
class Variant:
  """The train step with one piece removed or swapped."""
  name: str
  removes: str  # what is removed or swapped, as the table says it
  spec: str = ""  # added to the config file's variants ("position=none")
  model: dict = dataclasses.field(default_factory=dict)  # config.model fields
  intercept: Callable | None = None  # a flax method interceptor, active while tracing
  loss: Callable | None = None  # loss_fn(model, mask_rate) instead of the task's
  tx: Callable | None = None  # () -> the optimizer instead of the config's
  head: bool = True  # whether the MLM head's products are still computed


VARIANTS = (
    Variant(FULL, "nothing: the step as trained"),
    Variant("dropout=0", "dropout of the embeddings and of every sublayer's output (the "
            "Threefry hash of each element; attention dropout is 0 already)",
            model={"dropout": 0.0}),
    Variant("position=none", "RoPE's rotation of q and k", spec="position=none"),
    Variant("scale=standard", "log-n (the key count of each query, a per-row scale of the "
            "logits) for the constant 1/sqrt(d)", spec="scale=standard"),
    Variant("constant mask", "the padding mask (a constant all-true one: the attention's "
            "select and log-n's key count fold away)", intercept=_constant_mask),
    Variant("norms without parameters", "the LayerNorms' scale and bias (and flax's "
            "variance formula) for the stand-in's norm", intercept=_plain_norms),
    Variant("no biases", "every dense layer's bias (its add, its gradient's sum over the "
            "tokens)", intercept=_no_biases),
    Variant("embedding without gradient", "the embedding's backward (the lookup gradient's "
            "scatter-add into the vocabulary table, the embedding norm's and dropout's)",
            intercept=_frozen_embedding),
    Variant("no MLM head", "the MLM head and loss (dense, GELU, norm, tied decoder, softmax "
            "over the vocabulary, argmax) for a mean square of the masked hidden states",
            loss=headless_loss, head=False),
    Variant("no optimizer update", "gradient clipping and AdamW (the gradients, their norm "
            "and the finite check are still computed)", tx=optax.set_to_zero),
)


def intercepted(loss_fn, interceptor):
  """loss_fn(model, mask_rate) whose loss is traced with `interceptor` active."""
  def make(model, mask_rate):
    inner = loss_fn(model, mask_rate)

    def loss(*args):
      with nn.intercept_methods(interceptor):
        return inner(*args)
    return loss
  return make


def variant_config(base: str, variant: Variant):
  from utils.cli import load_config_file
  spec = base if not variant.spec else base + ("," if ":" in base else ":") + variant.spec
  config = load_config_file(spec)
  for field, value in variant.model.items():
    config.model[field] = value
  return config


def compiled_variant(base: str, variant: Variant, length: int, batch: int, vocab: int):
  """(run, compiled, model FLOPs): the variant's train step, as compiled_train_step's."""
  from benchmarks.mlm_throughput import compiled_train_step, matmul_flops
  from data.mlm import num_predictions
  from training import mlm
  config = variant_config(base, variant)
  loss = variant.loss or mlm.mlm_loss_fn
  if variant.intercept is not None:
    loss = intercepted(loss, variant.intercept)
  run, compiled = compiled_train_step(config, length, batch, vocab, loss_fn=loss,
                                      tx=variant.tx() if variant.tx else None)
  predictions = num_predictions(length, config.data.mask_rate) if variant.head else 0
  return run, compiled, matmul_flops(config.model, batch, length, predictions, vocab)


# ----------------------------------------------------------------------------- the accounting

def itemise(times: dict, flops: dict, standin_flops: float) -> dict:
  """The gap's pieces from interleaved times.

  times: {name: [seconds, one per round]} of FULL, the other variants and STANDIN;
  flops: {variant: its matrix products' FLOPs}; standin_flops: the stand-in's.
  In round r the stand-in's rate is R_r = standin_flops / times[STANDIN][r], a variant's
  excess e_v,r = times[v][r] - flops[v] / R_r, and piece v costs e_full,r - e_v,r.
  Returns medians over the rounds (seconds): 'excess' (of the full step), 'expected' (its
  products at the stand-in's rate), 'pieces' {v: (median, lowest, highest)} and
  'unexplained' = excess - the sum of the pieces' medians.
  """
  standin = np.asarray(times[STANDIN])
  excess = {v: np.asarray(times[v]) - flops[v] * standin / standin_flops for v in flops}
  pieces = {}
  for v in flops:
    if v != FULL:
      d = excess[FULL] - excess[v]
      pieces[v] = (float(np.median(d)), float(d.min()), float(d.max()))
  total = float(np.median(excess[FULL]))
  return {"excess": total, "expected": float(np.median(flops[FULL] * standin / standin_flops)),
          "pieces": pieces, "unexplained": total - sum(p[0] for p in pieces.values())}


# ----------------------------------------------------------------------------- the section

def measure(base: str, length: int, batch: int, vocab: int, rounds: int, calls: int,
            variants=VARIANTS, clock=time.perf_counter, warmup: int = 2) -> dict:
  """Every variant's step and both stand-ins timed interleaved (clock: interleaved_times');
  the itemised gap."""
  from benchmarks.common import compiled_cost, interleaved_times
  from benchmarks.mlm_throughput import bare_block_step, matmul_flops
  runs, flops, cost = {}, {}, {}
  for v in variants:
    runs[v.name], compiled, flops[v.name] = compiled_variant(base, v, length, batch, vocab)
    cost[v.name] = compiled_cost(compiled)
  m = variant_config(base, variants[0]).model
  for name, elementwise in ((STANDIN, False), (ELEMENTWISE, True)):
    runs[name], compiled = bare_block_step(m, batch, length, elementwise)
    cost[name] = compiled_cost(compiled)
  times = interleaved_times(runs, rounds, calls, warmup, clock)
  standin_flops = matmul_flops(m, batch, length, 0, vocab)
  return {"times": {k: float(np.median(v)) for k, v in times.items()}, "cost": cost,
          "flops": flops, "gap": itemise(times, flops, standin_flops),
          "standin_flops": standin_flops}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
UNITS = {"wall": "ms / step", "cpu": "CPU ms / step"}


def table(result: dict, variants=VARIANTS, unit: str = UNITS["wall"]) -> list[str]:
  ms = lambda s: f"{1e3 * s:,.1f}"
  t, gap, cost = result["times"], result["gap"], result["cost"]
  excess = gap["excess"]
  share = lambda s: f"{100 * s / excess:.0f}%" if excess > 0 else "n/a"
  gb = lambda name, key: cost[name].get(key, 0.0) / 1e9
  lines = [f"Full step {ms(t[FULL])} ms; its matrix products at the stand-in's rate "
           f"{ms(gap['expected'])} ms: the step at **{gap['expected'] / t[FULL]:.2f}** of the "
           f"stand-in's rate, **excess {ms(excess)} ms** ({unit}).", "",
           f"| variant | removed or swapped | {unit} | piece: the full step's excess minus the "
           "variant's, ms (range over rounds) | share of the excess | XLA GFLOP | XLA GB "
           "accessed (minus the full step's) |",
           "|---|---|---|---|---|---|---|"]
  for v in variants:
    piece = gap["pieces"].get(v.name)
    cell = "" if piece is None else f"{ms(piece[0])} ({ms(piece[1])} to {ms(piece[2])})"
    bytes_ = gb(v.name, "bytes accessed")
    diff = "" if v.name == FULL else f" ({bytes_ - gb(FULL, 'bytes accessed'):+.3f})"
    lines.append(f"| {v.name} | {v.removes} | {ms(t[v.name])} | {cell} | "
                 f"{'' if piece is None else share(piece[0])} | {gb(v.name, 'flops'):.2f} | "
                 f"{bytes_:.3f}{diff} |")
  lines.append(f"| **unexplained** | the excess minus the pieces | | "
               f"**{ms(gap['unexplained'])}** | **{share(gap['unexplained'])}** | | |")
  for name, what in ((STANDIN, "the encoder's products, residual adds"),
                     (ELEMENTWISE, "the same + softmax, GELU, two parameter-free norms")):
    lines.append(f"| {name} | {what} ({result['standin_flops'] / 1e9:.2f} GFLOP of products) "
                 f"| {ms(t[name])} | | | {gb(name, 'flops'):.2f} | {gb(name, 'bytes accessed'):.3f} |")
  return lines


def gap_section(args) -> list[str]:
  """performance.py --section gap: the itemised gap at each of args.gap_lengths."""
  from benchmarks.performance import THROUGHPUT, spec
  quick = args.quick
  base = spec(THROUGHPUT, quick)
  lengths = (16,) if quick else tuple(int(n) for n in args.gap_lengths.split(","))
  batch = 2 if quick else args.gap_batch
  rounds, warmup = (2, 1) if quick else (args.gap_rounds, args.gap_warmup)
  unit = UNITS[args.gap_clock]
  lines = [f"Throughput model ({base}), batch {batch}, vocabulary {args.vocab}; every step "
           f"and both stand-ins timed interleaved ({warmup} untimed calls each, then {rounds} "
           f"rounds of one call each), medians of the per-round values, clock: "
           f"{args.gap_clock}{' (CPU seconds of the process)' if args.gap_clock == 'cpu' else ''}."
           " Stand-in: mlm_throughput.bare_block_step, the encoder's matrix products alone; a "
           "variant's piece is the full step's excess over the stand-in's rate minus the "
           "variant's (benchmarks/step_gap.py)."]
  for length in lengths:
    result = measure(base, length, batch, args.vocab, rounds, 1, clock=CLOCKS[args.gap_clock],
                     warmup=warmup)
    table_lines = table(result, unit=unit)
    lines += ["", f"### Train length {length}", "", *table_lines]
    print("\n".join(table_lines), flush=True)
  return lines

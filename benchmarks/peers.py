"""Our MLM train step vs HuggingFace's RoFormer in PyTorch and in Flax, at one model, in one
process, timed in turn.

  python benchmarks/peers.py [--lengths 64,128] [--batch 32] [--vocab 8000] [--rounds 5]
      [--calls 4] [--out FILE]
  python benchmarks/peers.py --quick          # tiny shapes: checks the script runs

The model is the throughput model (4 layers, width 256, 4 heads, MLP 1024) made into what
HF's RoFormer computes (interop/hf.py's map, FIXED and ROTARY: softmax attention with the
1/sqrt(d) scale, post-LN, RoPE on q and k in the interleaved layout, no absolute positions;
a token-type table, dropout 0.1 on hidden states and attention probabilities) and the HF
config is written from our model config by the same map, so the three share every number.
tests/test_benchmark_peers.py checks that they build the same parameter count.

Each implementation as its users run it:
  * ours: the task's jitted train step (benchmarks/mlm_throughput.compiled_train_step):
    masking drawn inside the step, dropout, forward, backward, clip + AdamW with its schedule,
    donated state; the MLM head at the masked positions only;
  * ours, head everywhere: the same step with the head at every position (as HF's heads do),
    the loss weighing the masked ones (training/mlm.mlm_loss_fn, head_everywhere);
  * HF PyTorch: RoFormerForMaskedLM in model.train(), torch.optim.AdamW, loss.backward(),
    optimizer.step(), torch's default thread count;
  * HF Flax: FlaxRoFormerForMaskedLM's module under one jax.jit train step with optax.adamw,
    a dropout key split per step, donated state.
The token data is the same batch for all (mlm_throughput.random_tokens); the peers get it
masked at 15% by our masking (data/mlm.mlm_mask: a few draws made before timing, cycled),
where our step draws a fresh mask inside each step (its cost is in our time).

Timing (benchmarks/common.interleaved_times): after warm-up calls, each round times `calls`
steps of every implementation in turn (the order rotated), so that machine noise hits all
alike; the table gives the median tokens/s over the rounds and the ratio of medians, with
the range of the per-round ratios.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import interleaved_times, report  # noqa: E402
from benchmarks.mlm_throughput import (bare_block_step, bare_block_weights,  # noqa: E402
                                       compiled_train_step, matmul_flops, random_tokens)

MODEL = "configs/mlm_extrapolation.py:width=256,layers=4,heads=4,mlp=1024"
QUICK_MODEL = "configs/mlm_extrapolation.py:width=32,layers=1,heads=2,mlp=64"
IGNORED = -100  # HF's label of a position without a target
IMPLS = ("ours", "ours, head everywhere", "HF PyTorch", "HF Flax")
# the bare-products stand-ins, timed in the same rounds: what each framework reaches on the
# encoder's matrix products alone, the ceiling of any step built on it
XLA_PRODUCTS, TORCH_PRODUCTS = "products alone, XLA", "products alone, PyTorch"


def roformer_config(spec: str):
  """The experiment config of `spec` with its model made into what HF's RoFormer computes."""
  from interop.hf import FIXED, ROTARY
  from utils.cli import load_config_file
  config = load_config_file(spec)
  config.model.update(dict(FIXED, **ROTARY))
  # RoFormer's own: dropout on attention probabilities as on hidden states, a token-type table
  config.model.update(attention_dropout=config.model.dropout, type_vocab_size=2)
  return config


def hf_roformer_config(config, vocab_size: int):
  """transformers.RoFormerConfig of the same model (interop/hf.py writes it from ours)."""
  import transformers
  from interop.hf import architecture_of, hf_config
  from training import mlm
  cfg = mlm.model_config(config, vocab_size)
  hf = {k: v for k, v in hf_config(cfg, architecture_of(cfg)).items()
        if k not in ("architectures", "model_type")}
  return transformers.RoFormerConfig(**hf)


def masked_batches(tokens, vocab_size: int, rate: float, draws: int = 4):
  """[(input_ids, labels)] of `draws` maskings of tokens by our masking, labels in HF's form
  (the original token where a target is, IGNORED elsewhere)."""
  from data.mlm import mlm_mask
  out = []
  rows = np.arange(tokens.shape[0])[:, None]
  for i in range(draws):
    inputs, positions, targets, weights = map(np.asarray, mlm_mask(
        jax.random.PRNGKey(100 + i), jnp.asarray(tokens), vocab_size=vocab_size, rate=rate))
    labels = np.full(tokens.shape, IGNORED, np.int64)
    labels[rows, positions] = np.where(weights > 0, targets, IGNORED)
    out.append((inputs.astype(np.int64), labels))
  return out


def torch_peer(hf_config, train, batches):
  """(model, run): HF's PyTorch RoFormerForMaskedLM and one training step of it."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.RoFormerForMaskedLM(hf_config)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, betas=(train.b1, train.b2),
                          eps=train.eps, weight_decay=train.weight_decay)
  data = itertools.cycle([(torch.from_numpy(i), torch.from_numpy(t)) for i, t in batches])
  attention_mask = torch.ones(batches[0][0].shape, dtype=torch.long)

  def run():
    input_ids, labels = next(data)
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    opt.step()
    return loss.item()
  return model, run


def flax_peer(hf_config, train, batches):
  """(model, run): HF's FlaxRoFormerForMaskedLM and one jitted training step of it."""
  import optax
  import transformers
  from objectives.mlm import mlm_loss
  length = batches[0][0].shape[1]
  model = transformers.FlaxRoFormerForMaskedLM(hf_config, input_shape=(1, length), seed=0)
  tx = optax.adamw(train.learning_rate, b1=train.b1, b2=train.b2, eps=train.eps,
                   weight_decay=train.weight_decay)
  attention_mask = jnp.ones(batches[0][0].shape, jnp.int32)

  def loss_fn(params, input_ids, labels, dropout_key):
    logits = model(input_ids, attention_mask, params=params, dropout_rng=dropout_key,
                   train=True).logits
    return mlm_loss(logits, jnp.maximum(labels, 0), (labels != IGNORED).astype(jnp.float32))[0]

  def step(state, input_ids, labels):
    params, opt_state, key = state
    key, dropout_key = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(params, input_ids, labels, dropout_key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, key), loss

  step = jax.jit(step, donate_argnums=(0,))
  data = itertools.cycle([(jnp.asarray(i, jnp.int32), jnp.asarray(t, jnp.int32))
                          for i, t in batches])
  holder = {"state": (model.params, tx.init(model.params), jax.random.PRNGKey(0))}

  def run():
    holder["state"], loss = step(holder["state"], *next(data))
    return loss
  return model, run


def torch_products(m, batch: int, length: int):
  """A no-argument call of the gradient of benchmarks/mlm_throughput.bare_block_step's
  products-alone stand-in written in PyTorch: the same products (q, k, v, o, the MLP pair, the
  two attention products, residual adds) on the same numbers through torch's autograd, nothing
  else. It returns the loss; the last call's gradients are left in run.grads."""
  import torch
  w, h, t, d = m.width, m.num_heads, batch * length, m.width // m.num_heads
  weights, x0 = bare_block_weights(m, batch, length)  # the XLA stand-in's numbers
  params = [{k: torch.from_numpy(v).requires_grad_() for k, v in p.items()} for p in weights]
  x0 = torch.from_numpy(x0)
  heads = lambda y: y.reshape(batch, length, h, d).transpose(1, 2)

  def run():
    x = x0
    for p in params:
      o = (heads(x @ p["q"]) @ heads(x @ p["k"]).transpose(-1, -2)) @ heads(x @ p["v"])
      x = x + o.transpose(1, 2).reshape(t, w) @ p["o"]
      x = x + (x @ p["fc1"]) @ p["fc2"]
    loss = (x * x).sum()
    loss.backward()
    run.grads = [{k: v.grad for k, v in p.items()} for p in params]  # for the tests
    for p in params:
      for v in p.values():
        v.grad = None
    return loss.item()
  return run


def our_parameters(config, vocab_size: int, length: int):
  """Shapes of our MlmModel's parameters (nothing allocated)."""
  from model.encoder import MlmModel
  from training import mlm
  model = MlmModel(mlm.model_config(config, vocab_size))
  return jax.eval_shape(lambda: mlm.init_params(model, jax.random.PRNGKey(0), length))


def parameter_counts(ours_params, torch_model, flax_model) -> dict:
  """Trained parameters of each (PyTorch: the ones with gradients; its rotary table is a
  frozen parameter there, a constant in the other two; tied tables counted once)."""
  size = lambda tree: sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))
  return {"ours": size(ours_params),
          "HF PyTorch": sum(p.numel() for p in torch_model.parameters() if p.requires_grad),
          "HF Flax": size(flax_model.params)}


def compare(config, length: int, batch: int, vocab: int, rounds: int, calls: int):
  """{impl: [tokens/s per round]} and the parameter counts, at one training length."""
  from training import mlm
  hf = hf_roformer_config(config, vocab)
  batches = masked_batches(random_tokens(batch, length, vocab), vocab, config.data.mask_rate)
  ours, _ = compiled_train_step(config, length, batch, vocab)
  everywhere, _ = compiled_train_step(
      config, length, batch, vocab,
      loss_fn=lambda model, rate: mlm.mlm_loss_fn(model, rate, head_everywhere=True))
  torch_model, torch_run = torch_peer(hf, config.train, batches)
  flax_model, flax_run = flax_peer(hf, config.train, batches)
  counts = parameter_counts(our_parameters(config, vocab, length), torch_model, flax_model)
  runs = dict(zip(IMPLS, (ours, everywhere, torch_run, flax_run)))
  runs[XLA_PRODUCTS] = bare_block_step(config.model, batch, length, elementwise=False)[0]
  runs[TORCH_PRODUCTS] = torch_products(config.model, batch, length)
  times = interleaved_times(runs, rounds, calls)
  return {k: [batch * length / s for s in v] for k, v in times.items()}, counts


def table(results, batch: int, config, vocab: int) -> list[str]:
  from data.mlm import num_predictions
  lines = ["| train length | " + " | ".join(f"{k} tokens/s" for k in IMPLS) +
           " | ours / PyTorch | ours / Flax | head everywhere / PyTorch | head everywhere / "
           "Flax | ours / head everywhere (FLOP ratio) |", "|---" * (len(IMPLS) + 6) + "|"]
  for length, (rates, _) in results.items():
    med = {k: float(np.median(v)) for k, v in rates.items()}

    def ratio(a, b):
      per_round = np.asarray(rates[a]) / np.asarray(rates[b])
      return (f"**{med[a] / med[b]:.2f}x** ({per_round.min():.2f}-{per_round.max():.2f})")
    flop = lambda predictions: matmul_flops(config.model, batch, length, predictions, vocab)
    flop_ratio = flop(length) / flop(num_predictions(length, config.data.mask_rate))
    lines.append(f"| {length} | " + " | ".join(f"{med[k]:,.0f}" for k in IMPLS) + " | " +
                 " | ".join(ratio(a, b) for a, b in (
                     ("ours", "HF PyTorch"), ("ours", "HF Flax"),
                     ("ours, head everywhere", "HF PyTorch"),
                     ("ours, head everywhere", "HF Flax"), ("ours", "ours, head everywhere")))
                 + f" ({flop_ratio:.2f}x) |")
  return lines


def ceiling_table(results, batch: int, config, vocab: int) -> list[str]:
  """The same run read against the products-alone stand-ins: each framework's rate on the
  encoder's matrix products with nothing else, each step's share of it, and the ceiling: our
  step's products (head at the masked positions) at XLA's products-alone rate, nothing else."""
  from data.mlm import num_predictions
  lines = ["| train length | products alone, XLA GFLOP/s | products alone, PyTorch GFLOP/s | "
           "ours GFLOP/s (of XLA's products alone) | HF PyTorch GFLOP/s (of PyTorch's "
           "products alone) | HF Flax GFLOP/s (of XLA's products alone) | ceiling tokens/s | "
           "ceiling / PyTorch | ceiling / Flax |", "|---" * 9 + "|"]
  for length, (rates, _) in results.items():
    flop = lambda predictions: matmul_flops(config.model, batch, length, predictions, vocab)
    flops = {XLA_PRODUCTS: flop(0), TORCH_PRODUCTS: flop(0), "HF PyTorch": flop(length),
             "HF Flax": flop(length),
             "ours": flop(num_predictions(length, config.data.mask_rate))}
    # per round: GFLOP/s of each, and the ceiling's tokens/s (ours' FLOPs at XLA's rate)
    gflops = {k: np.asarray(rates[k]) * flops[k] / (batch * length) / 1e9 for k in flops}
    ceiling = np.asarray(rates[XLA_PRODUCTS]) * flops[XLA_PRODUCTS] / flops["ours"]
    med = {k: float(np.median(v)) for k, v in gflops.items()}

    def over(per_round, peer):
      r = per_round / np.asarray(rates[peer])
      return (f"**{np.median(per_round) / np.median(rates[peer]):.2f}x** "
              f"({r.min():.2f}-{r.max():.2f})")
    share = lambda k, base: f"{med[k]:.0f} ({100 * med[k] / med[base]:.0f}%)"
    lines.append(f"| {length} | {med[XLA_PRODUCTS]:.0f} | {med[TORCH_PRODUCTS]:.0f} | "
                 f"{share('ours', XLA_PRODUCTS)} | {share('HF PyTorch', TORCH_PRODUCTS)} | "
                 f"{share('HF Flax', XLA_PRODUCTS)} | {np.median(ceiling):,.0f} | "
                 f"{over(ceiling, 'HF PyTorch')} | {over(ceiling, 'HF Flax')} |")
  return lines


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default=MODEL, help="the model (made into RoFormer's, see above)")
  p.add_argument("--lengths", default="64,128")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--vocab", type=int, default=8000)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--calls", type=int, default=4, help="steps per implementation per round")
  p.add_argument("--quick", action="store_true", help="tiny shapes: checks the script runs")
  p.add_argument("--out", default="")
  args = p.parse_args()
  if args.quick:
    args.config, args.lengths, args.batch, args.vocab = QUICK_MODEL, "32", 4, 500
    args.rounds, args.calls = 2, 2
  start = time.time()
  import torch
  from utils.host_memory import keep_freed_host_memory
  kept = keep_freed_host_memory()  # as the entry points do: measure what train.py runs
  config = roformer_config(args.config)
  results = {n: compare(config, n, args.batch, args.vocab, args.rounds, args.calls)
             for n in (int(x) for x in args.lengths.split(","))}
  counts = next(iter(results.values()))[1]
  m = config.model
  lines = [
      f"Model: {m.num_layers} layers, width {m.width}, {m.num_heads} heads, MLP {m.mlp_dim}, "
      f"vocabulary {args.vocab}, RoPE on q and k (interleaved), scale 1/sqrt(d), post-LN, "
      f"dropout {m.dropout} (hidden) and {m.attention_dropout} (attention), token-type table; "
      f"AdamW; batch {args.batch}; 15% of tokens masked. Parameters: " +
      ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ".",
      f"{args.rounds} rounds of {args.calls} steps of each implementation in turn (after 2 "
      f"warm-up steps each); median tokens/s; ratios of the medians (range of the per-round "
      f"ratios). PyTorch {torch.__version__}, {torch.get_num_threads()} threads; "
      f"transformers {__import__('transformers').__version__}; freed host memory kept for "
      f"reuse: {'yes' if kept else 'no'}." + (" QUICK: tiny shapes, not a measurement."
                                             if args.quick else ""),
      "", *table(results, args.batch, config, args.vocab), "",
      "'head everywhere': our step with the MLM head (dense, norm, vocabulary product) at "
      "every position, as HF's heads compute it; the last column is what running it at the "
      "masked positions only gains, measured, and (in parentheses) the ratio of the two steps' "
      "matrix-product FLOPs (benchmarks/mlm_throughput.matmul_flops).", "",
      "The same rounds against the products-alone stand-ins (timed with them, in turn): the "
      "encoder's matrix products (q, k, v, o, the MLP pair, the two attention products, "
      "residual adds), their gradient and nothing else, as XLA compiles them "
      "(benchmarks/mlm_throughput.bare_block_step) and as PyTorch's autograd runs them "
      "(torch_products). Each step's GFLOP/s counts its matrix products (HF's heads at every "
      "position, ours at the masked ones). 'Ceiling': our step's products at XLA's "
      "products-alone rate with nothing else at all (no dropout, norms, softmax, optimizer), "
      "what a step would reach if all its other work cost nothing, at the rate XLA reaches "
      "on these products; ceiling / peer is the ratio to the peer that such a step would "
      "show.", "",
      *ceiling_table(results, args.batch, config, args.vocab)]
  report(lines, start, args.out, "Our MLM step vs HuggingFace RoFormer (PyTorch, Flax)",
         "benchmarks/peers.py", sys.argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main())

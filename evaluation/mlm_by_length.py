"""MLM accuracy and loss at each evaluation length, on the validation split.

Every length is scored on (about) the same number of tokens, with a masking key fixed by
(eval.seed, length), so two runs are compared on exactly the same predictions.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from data.mlm import eval_sequences, mlm_mask
from data.tokenizers import PAD
from objectives.mlm import mlm_loss
from utils.errors import UserError


def make_eval_step(model, vocab_size: int, mask_rate: float):
  @jax.jit
  def step(params, tokens, key):
    inputs, positions, targets, weights = mlm_mask(key, tokens, vocab_size=vocab_size,
                                                   rate=mask_rate)
    logits = model.apply({"params": params}, inputs, tokens != PAD, deterministic=True,
                         targets_at=positions)
    return mlm_loss(logits, targets, weights)[1]
  return step


def split_lengths(lengths, max_length):
  """(usable, refused) lengths for a model whose longest sequence is max_length (None: any)."""
  usable = [n for n in lengths if max_length is None or n <= max_length]
  return usable, [n for n in lengths if n not in usable]


def evaluate_lengths(model, params, valid_stream, lengths, *, vocab_size: int, mask_rate: float,
                     max_tokens: int, batch_tokens: int, seed: int) -> dict:
  """{length: {'accuracy', 'loss', 'predictions', 'sequences'}} for each length."""
  step = make_eval_step(model, vocab_size, mask_rate)
  results = {}
  for n in lengths:
    seqs = eval_sequences(valid_stream, n, max_tokens)
    bs = max(1, min(len(seqs), batch_tokens // n))
    key = jax.random.fold_in(jax.random.PRNGKey(seed), n)
    tot = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for i in range(math.ceil(len(seqs) / bs)):
      batch = seqs[i * bs:(i + 1) * bs]
      if len(batch) < bs:  # pad the last batch with empty rows: weight 0, no recompilation
        batch = np.concatenate([batch, np.full((bs - len(batch), n), PAD, batch.dtype)])
      out = step(params, jnp.asarray(batch), jax.random.fold_in(key, i))
      for k in tot:
        tot[k] += float(out[k])
    results[n] = {"accuracy": tot["correct"] / tot["count"], "loss": tot["loss_sum"] / tot["count"],
                  "predictions": int(tot["count"]), "sequences": int(len(seqs))}
  return results


def load_run(workdir: str, *, config=None, data=None, params=None, step=None):
  """(config, data, model, step, params) of an MLM workdir; params from its newest checkpoint
  unless given."""
  from model.encoder import MlmModel
  from training import mlm, workdir as wd
  from training.checkpoint import restore_params

  config = config or wd.load_config(workdir)
  data = data or mlm.prepare_data(config, workdir)
  model = MlmModel(mlm.model_config(config, data.tokenizer.vocab_size))
  if params is None:
    restored = restore_params(
        workdir, lambda: mlm.init_params(model, jax.random.PRNGKey(0), config.data.train_length),
        config.train)
    if restored is None:
      raise UserError(f"{workdir!r} has no checkpoint to evaluate; train first")
    step, params = restored
  return config, data, model, step, params


def usable_lengths(workdir: str, model, lengths):
  """(usable, refused): lengths a length-bound model cannot encode are named in one line."""
  import sys
  usable, refused = split_lengths([int(n) for n in lengths], model.cfg.max_length())
  if refused:
    print(f"{workdir}: position={model.cfg.position}, attention={model.cfg.attention} cannot "
          f"encode lengths {refused} (at most {model.cfg.max_length()}); reporting {usable}",
          file=sys.stderr)
  return usable, refused


def evaluate_workdir(workdir: str, *, lengths=None, config=None, data=None, params=None,
                     step=None, out=None) -> dict:
  """Scores a workdir's latest checkpoint (or given params) at each length; saves eval.json.

  Lengths a length-bound model cannot encode are reported in one line and skipped.
  Returns {'step', 'lengths': {n: {...}}, 'refused': [...]}.
  """
  import os

  from utils.files import atomic_write_json

  run = load_run(workdir, config=config, data=data, params=params, step=step)
  config, data, model, step, params = run
  usable, refused = usable_lengths(workdir, model, lengths or config.eval.lengths)
  e = config.eval
  res = evaluate_lengths(model, params, data.valid_stream, usable,
                         vocab_size=data.tokenizer.vocab_size, mask_rate=config.data.mask_rate,
                         max_tokens=e.max_tokens, batch_tokens=e.batch_tokens, seed=e.seed)
  result = {"step": int(step) if step is not None else None,
            "lengths": {str(n): v for n, v in res.items()}, "refused": refused}
  atomic_write_json(out or os.path.join(workdir, "eval.json"), result)
  return result

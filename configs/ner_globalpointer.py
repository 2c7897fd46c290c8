r"""Named-entity recognition with GlobalPointer: every (type, start, end) span scored at once.

The head of the GlobalPointer post (model/globalpointer.py): per type a,
s_a(i,j) = (R_i q_{i,a}).(R_j k_{j,a}) / sqrt(d) with RoPE; `head=efficient` shares one q, k
projection between the types and adds per-type start and end biases. Trained with the
multi-label softmax cross-entropy (objectives/globalpointer.py); decoded as every span with a
positive score, so nested entities need nothing special; scored as entity F1.

Commands (from the repository root):

  # the default: the synthetic nested-entity set (data/ner.py: LOC, PER, and ORG around a
  # nested LOC or PER), no downloads
  python train.py --config configs/ner_globalpointer.py --workdir runs/ner
  python train.py --config configs/ner_globalpointer.py:head=efficient --workdir runs/ner_eff
  python evaluate.py --workdir runs/ner                      # entity F1 on the validation set
  python evaluate.py --workdirs runs/ner runs/ner_eff --table
  # sweep(): both heads at seeds 0, 1, 2, then the table (P, R, F1, mean ± std over seeds)
  python sweep.py --config configs/ner_globalpointer.py --root runs/ner_heads --in_process
  # real data: a training and a validation file, BIO (`char tag` lines, blank line between
  # sentences) or CLUENER JSON lines ({"text": ..., "label": {type: {entity: [[s, e]]}}})
  python train.py --config configs/ner_globalpointer.py:train=train.json,valid=dev.json,\
format=cluener,max_len=64,steps=3000 --workdir runs/cluener

Variants (combine with commas): head=globalpointer|efficient, head_size=N, train=synthetic|FILE,
valid=synthetic|FILE, format=bio|cluener, max_len=N (tokens, with [CLS] and [SEP]; longer
sentences are cut and their entities past the cut count as missed), steps=N, batch=N, lr=X,
warmup=N, seed=N, width=N, layers=N, heads=N, mlp=N, dropout=P, smoke (a run of seconds).
Any value can also be overridden with --config.a.b=value; the model section holds every model
field at its declared default (docs/variants.md).

Expected result (measured at the commit that added this file, on 2 CPU cores shared with
other jobs, load average about 10): the default run (width 64, 2 layers, 600 steps of batch
32) trains in about 30 s of CPU time (85 s wall on that busy machine; the end-of-run
evaluation included) and scores entity F1 x100 = 100.00 (precision 100.00, recall 100.00) on
the 500 synthetic validation sentences (1307 entities, a third of them nested pairs);
head=efficient the same, 100.00, in 33 s of CPU. The synthetic set is solved: it checks that
the head, loss and decoding learn nested spans, not how good the model is. The smoke run
(width 32, one layer, 200 steps) reaches 97.6 (seed 0; 98.9 and 99.3 at seeds 1 and 2).
"""
from __future__ import annotations

import ml_collections

from configs import variants
from configs.common import (FINE_TUNING_SHORTCUTS, Grid, mesh_section, model_section,
                            train_section)

SHORTCUTS = {
    "head": "ner.head",
    "head_size": "ner.head_size",
    "train": "data.train",
    "valid": "data.valid",
    "format": "data.format",
    "max_len": "data.max_len",
    **FINE_TUNING_SHORTCUTS,
}


def smoke(c: ml_collections.ConfigDict) -> None:
  """A run of seconds that still learns the synthetic set (tests/test_ner_train.py)."""
  c.model.update(width=32, num_layers=1, num_heads=2, mlp_dim=64, dropout=0.0)
  c.ner.head_size = 16
  c.data.synthetic.update(num_train=1024, num_valid=200)
  c.train.update(steps=200, batch_size=32, learning_rate=2e-2, warmup_steps=10,
                 log_every=50, checkpoint_every=1000)
  c.eval.batch_size = 200



def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "ner"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      train="synthetic",  # 'synthetic' or a file in `format`
      valid="synthetic",  # 'synthetic' (with train=synthetic) or a file in `format`
      format="bio",  # bio | cluener
      max_len=32,  # tokens per sentence including [CLS] and [SEP]
      # char-level: one token per character, vocabulary from the training sentences
      tokenizer="char", vocab_size=0, min_count=1,
      synthetic=dict(num_train=4000, num_valid=500, seed=0),
  ))

  c.ner = ml_collections.ConfigDict(dict(
      head="globalpointer",  # globalpointer | efficient
      head_size=32,  # d of q and k (per type for globalpointer, shared for efficient)
  ))

  c.model = model_section(width=64, num_layers=2, num_heads=4, mlp_dim=256, dropout=0.1,
                          position="rope", max_len=512)

  c.train = train_section(
      steps=600, batch_size=32, learning_rate=2e-3, warmup_steps=50, schedule="linear",
      log_every=50, checkpoint_every=1000, keep_checkpoints=1)

  c.eval = ml_collections.ConfigDict(dict(batch_size=100, at_end=True))

  c.mesh = mesh_section()
  return variants.apply(c, variants.parse(arg), SHORTCUTS, {"smoke": smoke})


def sweep() -> Grid:
  """The two heads at seeds 0, 1, 2 (ROOT/head-globalpointer_seed-0, ...)."""
  return Grid(axes={"head": ["globalpointer", "efficient"]}, seeds=[0, 1, 2])

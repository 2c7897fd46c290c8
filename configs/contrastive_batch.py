r"""Contrastive batch study: STS Spearman vs batch size, InfoNCE vs FlatNCE, and accumulation.

The question (docs/techniques.md sections 6-7): how much does a contrastive sentence encoder
gain from a larger batch (more in-batch negatives); does FlatNCE beat InfoNCE at small batches,
as its paper claims; and does exact gradient accumulation (micro-batches of train.micro_batch)
reproduce the large-batch result where the naive average of micro-batch losses does not?

Commands (from the repository root):

  # the default run on the embedded synthetic paraphrase set (about 3 min of CPU time; 5 min
  # wall on a 2-core machine shared with other jobs)
  python train.py --config configs/contrastive_batch.py --workdir runs/cb_default
  # STS Spearman of one run: on the run's configured eval.sts (here the synthetic set), or on
  # another file, split and whitening
  python evaluate.py --workdir runs/cb_default
  python evaluate.py --workdir runs/cb_default --sts FILE [--sts_split dev] [--whitening_k K]
  # one point of the study: FlatNCE, effective batch 256 from micro-batches of 16, exact
  python train.py --config configs/contrastive_batch.py:loss=flatnce,batch=256,accumulation=exact \
      --workdir runs/cb_flatnce_256_exact
  # every point of sweep() (7 batch sizes x 2 losses x 3 modes x 2 seeds; at batch <=
  # train.micro_batch only mode none), resumable (skips finished runs); or one command per
  # point for a scheduler; then the table, mean +- std over seeds
  python sweep.py --config configs/contrastive_batch.py --root runs/cb
  python sweep.py --config configs/contrastive_batch.py --root runs/cb --print
  python evaluate.py --workdirs runs/cb/* --table [--plot runs/cb/spearman_vs_batch.png]
  # real data: supervised pairs (score >= 4) of STS-B train, starting from an MLM workdir of
  # this codebase, scored on STS-B dev (docs/results/contrastive_batch.md has the full recipe)
  python train.py --config configs/contrastive_batch.py:signal=supervised,\
train=../shared/data/stsb-en/stsbenchmark.train-dev.tsv,train_split=train,\
sts=../shared/data/stsb-en/stsbenchmark.train-dev.tsv,split=dev,init_from=runs/mlm_en \
      --workdir runs/cb_en_sup
  python evaluate.py --workdir runs/cb_en_sup --sts ../shared/data/stsb-en/stsbenchmark.train-dev.tsv \
      --sts_split dev [--whitening_k 64]

Variants (combine with commas): loss=infonce|flatnce|amsoftmax, accumulation=none|exact|naive,
batch=N, micro=N, signal=simcse|supervised|simbert, train=synthetic|FILE,
train_format=sts|pairs|sentences, train_split=train|dev|'', min_score=4, sts=synthetic|FILE,
split=dev|'', init_from=MLM_WORKDIR, pooling=cls|mean|first_last_mean, projection=N,
temperature=T, scale=S, margin=M, symmetric=true, pairing=cross|all, steps=N, lr=X, warmup=N,
seed=N, max_len=N, width=N, layers=N, heads=N, dropout=P, whitening=true, smoke (a run of
seconds).
Any value can also be overridden with --config.a.b=value; the model section holds every model
field at its declared default (docs/variants.md), e.g. --config.model.rope_scaling=ntk.

Expected result: the default run scores Spearman x100 = 63.7 on the synthetic STS set (1000
pairs), against 29.8 for the same encoder untrained (measured: lr=0,steps=1). The CPU-scale study
on STS-B (English and Chinese), with its honest comparison to the published numbers, is
docs/results/contrastive_batch.md. Published (supervised SimCSE, BERT-base, STS-B dev
Spearman x100) by batch size:

  | batch    | 32   | 64   | 128  | 256  | 512  | 1024 |
  |----------|------|------|------|------|------|------|
  | Spearman | 84.6 | 85.6 | 86.0 | 86.2 | 86.2 | 86.0 |
"""
from __future__ import annotations

import itertools

import ml_collections

from configs import variants
from configs.common import model_section, train_section

SHORTCUTS = {
    "loss": "loss.name",
    "temperature": "loss.temperature",
    "scale": "loss.scale",
    "margin": "loss.margin",
    "symmetric": "loss.symmetric",
    "pairing": "loss.pairing",
    "accumulation": "train.accumulation",
    "batch": "train.batch_size",
    "micro": "train.micro_batch",
    "steps": "train.steps",
    "lr": "train.learning_rate",
    "warmup": "train.warmup_steps",
    "signal": "data.signal",
    "train": "data.train",
    "train_format": "data.train_format",
    "train_split": "data.train_split",
    "min_score": "data.min_score",
    "max_len": "data.max_len",
    "tokenizer": "data.tokenizer",
    "sts": "eval.sts",
    "split": "eval.split",
    "whitening": "eval.whitening",
    "init_from": "init_from",
    "pooling": "sentence.pooling",
    "projection": "sentence.projection",
    "width": "model.width",
    "layers": "model.num_layers",
    "heads": "model.num_heads",
    "dropout": "model.dropout",
    "seed": "seed",
}

BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
LOSSES = ("infonce", "flatnce")
MODES = ("none", "exact", "naive")
SEEDS = (0, 1)


def smoke(c: ml_collections.ConfigDict) -> None:
  """A run of seconds: tiny model, tiny synthetic set, exact accumulation over 2 micro-batches."""
  c.model.update(width=32, num_layers=2, num_heads=2, mlp_dim=64)
  c.data.synthetic.update(num_train=64, num_eval=64)
  c.data.max_len = 24
  c.train.update(steps=6, batch_size=8, micro_batch=4, accumulation="exact", warmup_steps=2,
                 log_every=2, checkpoint_every=3)
  c.eval.batch_size = 64


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "contrastive"
  c.seed = 0
  c.init_from = ""  # an MLM workdir of train.py: its encoder, tokenizer and architecture

  c.data = ml_collections.ConfigDict(dict(
      signal="supervised",  # simcse | supervised | simbert
      train="synthetic",  # 'synthetic' or a file in train_format
      train_format="sts",  # sts (either STS format) | pairs (s1 TAB s2) | sentences (simcse)
      train_split="",  # STS Benchmark file with a split column: train | dev | '' (every row)
      min_score=4.0,  # supervised/simbert on an STS file: pairs scoring at least this
      max_len=32,  # tokens per sentence including [CLS] and [SEP] (simbert: per pair)
      # tokenizer of a model trained from scratch (init_from brings its own)
      tokenizer="char", vocab_size=0, min_count=1, vocab_file="", lowercase=True,
      synthetic=dict(num_train=4096, num_eval=1000, seed=0),
  ))

  # from scratch only; with init_from the architecture is the MLM run's, dropout is this one's
  c.model = model_section(width=128, num_layers=2, num_heads=4, mlp_dim=512, dropout=0.1,
                          position="rope", max_len=512, scale="logn", logn_n0=512)

  c.sentence = ml_collections.ConfigDict(dict(
      pooling="cls",  # cls | mean | first_last_mean
      projection=0,  # > 0: SimCSE's dense + tanh on the pooled vector, of this size
      eval_projection=True,  # evaluate with the projection (unsupervised SimCSE drops it)
  ))

  c.loss = ml_collections.ConfigDict(dict(
      name="infonce",  # infonce | flatnce | amsoftmax
      scale=0.0,  # logit scale; 0: use 1 / temperature
      temperature=0.05,
      margin=0.0,  # amsoftmax
      pairing="cross",  # cross: view 0 vs view 1 | all: every view vs every other (simbert)
      symmetric=False,  # cross: also the loss of view 1 against view 0
      simbert_weight=1.0,  # weight of SimBERT's generation loss
  ))

  c.train = train_section(
      steps=200, batch_size=64, learning_rate=3e-4, warmup_steps=20, schedule="linear",
      log_every=20, checkpoint_every=1000, keep_checkpoints=1,
      accumulation="none",  # none | exact | naive
      micro_batch=16,  # exact / naive: examples per micro-batch
  )

  c.eval = ml_collections.ConfigDict(dict(
      sts="synthetic",  # 'synthetic' or an STS file; '' = no evaluation at the end
      split="",  # STS Benchmark file with a split column: dev | train | test
      whitening=False,  # also whiten (fitted on the evaluation sentences)
      whitening_k=0,  # dimensions kept by whitening (0 = all)
      batch_size=256,
      at_end=True,
  ))

  return variants.apply(c, variants.parse(arg), SHORTCUTS, {"smoke": smoke})


def sweep() -> list[str]:
  """The study: batch x loss x accumulation x seed, micro-batch fixed at train.micro_batch.

  At batch <= micro_batch the three modes are the same computation (one micro-batch), so
  only mode `none` is listed there; the table shows that run in every mode's row.
  """
  micro = get_config().train.micro_batch
  return [f"loss={loss},accumulation={mode},batch={b},seed={seed}"
          for seed, loss, mode, b in itertools.product(SEEDS, LOSSES, MODES, BATCH_SIZES)
          if b > micro or mode == "none"]

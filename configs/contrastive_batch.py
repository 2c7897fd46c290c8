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

The study's controlled design: sweeps() names one sweep per question, each over seeds 0, 1, 2
(`budget`: STUDY_EPOCHS = 5 epochs of the training pairs at every batch size, so a batch of 8
takes 64x the updates of a batch of 512; lr_rule=sqrt from the given lr at batch 64, the usual
rule for Adam (SimCSE instead tuned the lr per batch: add lr=X to a command and compare);
warmup over 10% of the steps). The resolved steps and learning rate are printed by train.py,
kept in the workdir's config.json (train.steps) and metrics.jsonl, and listed under the table.
One command per question; the tables and plots come from evaluate.py (the sweep prints its
table too). From the repository root, with the MLMs and corpora of the recipe in
docs/results/contrastive_batch.md (runs/mlm_en, runs/mlm_zh, runs/corpus_*):

  EN=../shared/data/stsb-en/stsbenchmark.train-dev.tsv
  ZH_TRAIN=../shared/data/stsb-zh/STS-B.train.data ZH_DEV=../shared/data/stsb-zh/STS-B.valid.data
  # the learning rate at batch 64 from a probe on dev (docs/results/contrastive_batch.md)
  COMMON=signal=supervised,pooling=mean,max_len=32
  BASE_EN="configs/contrastive_batch.py:$COMMON,lr=1e-3,train=$EN,train_split=train,sts=$EN,split=dev,init_from=runs/mlm_en"
  BASE_ZH="configs/contrastive_batch.py:$COMMON,lr=3e-3,train=$ZH_TRAIN,sts=$ZH_DEV,init_from=runs/mlm_zh"
  S="python sweep.py --in_process"
  # 0. the encoder untouched (steps=0), per pooling, then BERT-whitening of each: k = 0 (all),
  #    64 (k above the width, 128 here, is refused), fitted on the dev sentences or on the
  #    train sentences of runs/corpus_en (the same for zh with $ZH_DEV and runs/corpus_zh)
  $S --config "$BASE_EN" --sweep base --root runs/cb_en_base
  for K in 0 64; do python evaluate.py --workdirs runs/cb_en_base/* --table --whitening_k $K; done
  python evaluate.py --workdirs runs/cb_en_base/* --table --whitening_k 0 \
      --whitening_corpus runs/corpus_en/stsb_train_sentences.txt
  # 1. batch 8 ... 512 x InfoNCE / FlatNCE at the fixed budget (table by batch, one row per loss)
  $S --config "$BASE_EN" --sweep batch --root runs/cb_en_batch
  $S --config "$BASE_ZH" --sweep batch --root runs/cb_zh_batch
  python evaluate.py --workdirs runs/cb_en_batch/* --table --plot runs/cb_en_batch/spearman_vs_batch.png
  # 2. unsupervised SimCSE: dropout views of the STS-B train sentences (one per line; the
  #    recipe's runs/corpus_*/stsb_train_sentences.txt), 1 epoch, batch 64
  $S --config "$BASE_EN,train=runs/corpus_en/stsb_train_sentences.txt" --sweep unsup --root runs/cb_en_unsup
  $S --config "$BASE_ZH,train=runs/corpus_zh/stsb_train_sentences.txt" --sweep unsup --root runs/cb_zh_unsup
  python evaluate.py --workdirs runs/cb_en_batch/*batch-64_* runs/cb_en_unsup/* --table
  # 3. temperature 0.001 ... 1 (cosine) and the dot product, batch 64 (table by tau, log plot)
  $S --config "$BASE_EN" --sweep temperature --root runs/cb_en_temperature
  python evaluate.py --workdirs runs/cb_en_temperature/* --table --plot runs/cb_en_temperature/spearman_vs_tau.png
  # 5. exact vs naive accumulation, effective batch 128 ... 1024 from micro-batches of 16
  #    (numbered as the study's questions; question 4, FlatNCE's mechanism, is not a sweep: benchmarks/flatnce_gradients.py)
  $S --config "$BASE_EN" --sweep accumulation --root runs/cb_en_accumulation
  # (each again with $BASE_ZH and a runs/cb_zh_* root; --only seed=0 runs one seed first)
  # the learning-rate check of question 1: the batch sweep at seed 0 with the rate at batch 64
  # x1/3 and x3, e.g. (x3 in English)
  $S --config "${BASE_EN/lr=1e-3/lr=3e-3}" --sweep batch --only seed=0 --root runs/cb_en_batch_lr-3e-3

CPU time, measured (docs/results/contrastive_batch.md, one core per language on a shared 2-core
machine; each run 23-70 s including compiling, loading and scoring STS-B dev): per language
(English: 1406 pairs, 11498 sentences; Chinese: 1285, 10462) base 3 runs, 1 min; batch 42
runs, 22 min; temperature 18 runs, 10 min; accumulation 24 runs, 15 min; unsup 6 runs, 5
min. About 1 h per language (1.3-1.6 h with the learning-rate check), on top of the MLM
encoder (45-55 min).

Variants (combine with commas): loss=infonce|flatnce|amsoftmax, accumulation=none|exact|naive,
batch=N, micro=N, signal=simcse|supervised|simbert, train=synthetic|FILE,
train_format=sts|pairs|sentences, train_split=train|dev|'', min_score=4, sts=synthetic|FILE,
split=dev|'', init_from=MLM_WORKDIR, pooling=cls|mean|first_last_mean, projection=N,
temperature=T, similarity=cosine|dot, scale=S, margin=M, symmetric=true, pairing=cross|all,
steps=N (0: score the encoder as initialised), epochs=E (> 0: steps = ceil(E x examples /
batch)), lr=X, lr_rule=constant|sqrt|linear, lr_base=B, warmup=N, warmup_fraction=F, seed=N,
max_len=N, width=N, layers=N, heads=N, dropout=P, whitening=true, smoke (a run of seconds),
budget (the study's fixed budget: epochs=5, lr_rule=sqrt, warmup_fraction=0.1).
Any value can also be overridden with --config.a.b=value; the model section holds every model
field at its declared default (docs/variants.md), e.g. --config.model.rope_scaling=ntk.

Expected result: the default run scores Spearman x100 = 63.7 on the synthetic STS set (1000
pairs), against 29.8 for the same encoder untrained (measured with lr=0,steps=1; steps=0 now
scores the encoder as initialised without an update). The CPU-scale study
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
from configs.common import Grid, mesh_section, model_section, train_section

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
    "epochs": "train.epochs",
    "lr": "train.learning_rate",
    "lr_rule": "train.lr_rule",
    "lr_base": "train.lr_base_batch",
    "warmup": "train.warmup_steps",
    "warmup_fraction": "train.warmup_fraction",
    "similarity": "loss.similarity",
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

# the study's controlled design (sweeps()): a fixed data budget with the sqrt learning-rate rule
STUDY_SEEDS = (0, 1, 2)
STUDY_EPOCHS = 5.0  # about the old study's largest point (batch 512 x 15 updates = 5.5 epochs)
TEMPERATURES = (0.001, 0.01, 0.05, 0.1, 1.0)  # SimCSE table D.1
TEMPERATURE_BATCH = 64  # = train.lr_base_batch: the lr rule leaves the learning rate as given
ACCUMULATION_BATCHES = (128, 256, 512, 1024)
POOLINGS = ("cls", "mean", "first_last_mean")
UNSUP_EPOCHS = 1.0  # ~10k distinct sentences: about the examples of a supervised run


def smoke(c: ml_collections.ConfigDict) -> None:
  """A run of seconds: tiny model, tiny synthetic set, exact accumulation over 2 micro-batches."""
  c.model.update(width=32, num_layers=2, num_heads=2, mlp_dim=64)
  c.data.synthetic.update(num_train=64, num_eval=64)
  c.data.max_len = 24
  c.train.update(steps=6, batch_size=8, micro_batch=4, accumulation="exact", warmup_steps=2,
                 log_every=2, checkpoint_every=3)
  c.eval.batch_size = 64


def budget(c: ml_collections.ConfigDict) -> None:
  """The study's fixed data budget: STUDY_EPOCHS over the training pairs at every batch size,
  the sqrt learning-rate rule from train.learning_rate at train.lr_base_batch, warmup over 10%
  of the steps. A key=value of the same run string overrides any of these (`budget,epochs=3`)."""
  c.train.update(epochs=STUDY_EPOCHS, lr_rule="sqrt", warmup_fraction=0.1)


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
      similarity="cosine",  # cosine | dot (no normalisation; the scale applies to both)
  ))

  c.train = train_section(
      steps=200, batch_size=64, learning_rate=3e-4, warmup_steps=20, schedule="linear",
      log_every=20, checkpoint_every=1000, keep_checkpoints=1,
      accumulation="none",  # none | exact | naive
      micro_batch=16,  # exact / naive: examples per micro-batch
      # > 0: a data budget; steps = ceil(epochs * training examples / batch_size) (train.steps
      # is then ignored); 0: train.steps updates (0 updates: evaluate the encoder as initialised)
      epochs=0.0,
      warmup_fraction=0.0,  # > 0: warmup over this fraction of the steps (else warmup_steps)
      # learning rate at batch b: learning_rate * (b / lr_base_batch) ** {constant: 0, sqrt:
      # 0.5, linear: 1}; b is the effective batch (train.batch_size, also when accumulating)
      lr_rule="constant", lr_base_batch=64,
  )

  c.eval = ml_collections.ConfigDict(dict(
      sts="synthetic",  # 'synthetic' or an STS file; '' = no evaluation at the end
      split="",  # STS Benchmark file with a split column: dev | train | test
      whitening=False,  # also whiten (fitted on the evaluation sentences)
      whitening_k=0,  # dimensions kept by whitening (0 = all)
      batch_size=256,
      at_end=True,
  ))

  c.mesh = mesh_section()
  return variants.apply(c, variants.parse(arg), SHORTCUTS, {"smoke": smoke, "budget": budget})


def sweep() -> list[str]:
  """The study: batch x loss x accumulation x seed, micro-batch fixed at train.micro_batch.

  At batch <= micro_batch the three modes are the same computation (one micro-batch), so
  only mode `none` is listed there; the table shows that run in every mode's row.
  """
  micro = get_config().train.micro_batch
  return [f"loss={loss},accumulation={mode},batch={b},seed={seed}"
          for seed, loss, mode, b in itertools.product(SEEDS, LOSSES, MODES, BATCH_SIZES)
          if b > micro or mode == "none"]


def _budgeted(entries) -> list[str]:
  return [f"budget,{e}" for e in entries]


def sweeps() -> dict:
  """The study's questions, each a controlled comparison over STUDY_SEEDS at the `budget` flag's
  fixed data budget (the module docstring has the commands):

  - base: the encoder as initialised (steps=0: init_from's MLM encoder, untrained here), per
    pooling; deterministic, so one run each (whitening is an option of evaluate.py).
  - batch: batch 8 ... 512 x InfoNCE / FlatNCE, every batch seeing the same examples.
  - temperature: tau in TEMPERATURES with cosine scores, and the dot product (tau = 1, as
    SimCSE's table D.1 has it), at batch TEMPERATURE_BATCH.
  - accumulation: effective batch 128 ... 1024 from micro-batches of 16, exact vs naive.
  - unsup: SimCSE's dropout views of single sentences (a sentences file as data.train),
    UNSUP_EPOCHS over it, at batch 64, next to the supervised runs.
  """
  seeds = STUDY_SEEDS
  temperature = [f"batch={TEMPERATURE_BATCH},{t},seed={s}" for s in seeds for t in
                 [f"temperature={tau:g}" for tau in TEMPERATURES] + ["similarity=dot,temperature=1"]]
  return {
      "base": [f"steps=0,pooling={p}" for p in POOLINGS],
      "batch": _budgeted(Grid({"loss": LOSSES, "batch": BATCH_SIZES}, seeds).entries()),
      "temperature": _budgeted(temperature),
      "accumulation": _budgeted(Grid({"micro": [16], "accumulation": ["exact", "naive"],
                                      "batch": ACCUMULATION_BATCHES}, seeds).entries()),
      "unsup": _budgeted(Grid({"signal": ["simcse"], "train_format": ["sentences"],
                               "epochs": [UNSUP_EPOCHS], "loss": LOSSES, "batch": [64]},
                              seeds).entries()),
  }

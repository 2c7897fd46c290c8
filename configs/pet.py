r"""Few-shot classification as masked-LM prediction (PET): zero-shot and K-shot accuracy.

The post's recipe (training/pet.py, objectives/pet.py): a pattern turns a text into an MLM
input with [MASK] slots, "[MASK]满意。{text}"; a verbalizer gives each label a word of as
many tokens as there are slots (negative -> 不, positive -> 很); the prediction is the label
whose word gets the highest log-probability at the slots. train.steps=0 scores an MLM as it
is (zero-shot); otherwise pet.shots examples of each label, drawn with the seed, fine-tune it
with the loss at the slots (pet.loss=mlm, the post's, or labels), optionally plus the MLM loss
on unlabelled text (unlabeled=FILE|synthetic, unlabeled_weight).

Commands (from the repository root):

  # the synthetic sentiment task (data/sentiment.py), no downloads. An MLM pretrained on its
  # review corpus (corpus=reviews: "很满意。" before positive sentences, "不满意。" before
  # negative ones), then zero-shot and 8-shot from it, and 8-shot from scratch
  python train.py --config configs/mlm_extrapolation.py:corpus=reviews,length=32,steps=300,\
width=64,heads=4,mlp=128,lengths=32 --workdir runs/mlm_reviews
  python train.py --config configs/pet.py:init_from=runs/mlm_reviews,zero --workdir runs/pet_zero
  python train.py --config configs/pet.py:init_from=runs/mlm_reviews --workdir runs/pet_8
  python train.py --config configs/pet.py --workdir runs/pet_scratch_8
  python evaluate.py --workdir runs/pet_8                    # accuracy on the evaluation set
  python evaluate.py --workdirs runs/pet_zero runs/pet_8 runs/pet_scratch_8 --table
  # sweep(): from scratch, 2, 8 and 32 shots per label at seeds 0, 1, 2, then the table
  # (add --variant init_from=runs/mlm_reviews to start every run from the MLM)
  python sweep.py --config configs/pet.py --root runs/pet_shots --in_process
  # real data: an MLM of this codebase or one convert.py imported (e.g. bert-base-chinese, README),
  # files of {"text": ..., "label": ...} lines (format=jsonl) or text<TAB>label (format=tsv)
  python train.py --config "configs/pet.py:init_from=runs/bert_zh,train=train.jsonl,\
valid=dev.jsonl,labels=0+1,words=不+很,zero,max_len=128" --workdir runs/pet_bert_zero
  python train.py --config "configs/pet.py:init_from=runs/bert_zh,train=train.jsonl,\
valid=dev.jsonl,labels=0+1,words=不+很,shots=16,lr=2e-5,steps=200,max_len=128" \
      --workdir runs/pet_bert_16

Variants (combine with commas): init_from=MLM_WORKDIR, train=synthetic|FILE,
valid=synthetic|FILE, unlabeled=synthetic|FILE (texts for the MLM loss; labels optional),
format=jsonl|tsv, max_len=N (tokens with [CLS] and [SEP]; the text is cut, the pattern never),
pattern=TEXT (one {text}, [MASK] slots), labels=A+B+..., words=W+W+... (one per label, each
as many tokens as the pattern has slots), shots=K (per label; 0 = every training example;
a step takes at most the K x labels shots, whatever batch=N says), loss=mlm|labels,
unlabeled_weight=X, unlabeled_batch=N, steps=N, batch=N, lr=X, warmup=N, seed=N, width=N,
layers=N, heads=N, mlp=N, dropout=P (from scratch: the model; with init_from only the
dropout applies); flags: zero (train.steps=0, shots=0: the MLM untouched), smoke (a run of
seconds). Any value can also be overridden with --config.a.b=value.
A word of another token length than the slots, a word outside the vocabulary, a label in
the data that pet.labels lacks, or fewer than K examples of a label is refused in one line.

Expected result (measured at the commit that added this file, on 2 CPU cores shared with
other jobs, load average about 11; CPU times, each run's start-up included): the reviews MLM
(300 steps of 32 x 32 tokens) trains in 30 s and reaches 35% MLM accuracy at 32; from it,
zero-shot scores 100.00 on the 1000 synthetic evaluation sentences (chance 50; 6 s) and
8-shot fine-tuning 100.00 (14 s). From scratch (a fresh width-64 model, 150 steps on 16
sentences) 8-shot reaches 97.20 (16 s), loss=labels 97.80, unlabeled=synthetic 100.00 (22 s).
sweep() (from scratch, in process: 51 s of CPU for the 9 runs), mean ± std over seeds 0, 1, 2:
2 shots 91.27 ± 5.53, 8 shots 98.53 ± 1.22, 32 shots 99.83 ± 0.21.
The synthetic task is easy by construction (the label is which of two symbol sets a sentence
uses): it checks the pattern, verbalizer, scoring and fine-tuning, not how good a model is.
No public few-shot set has been run yet.
"""
from __future__ import annotations

import ml_collections

from configs import variants
from configs.common import (FINE_TUNING_SHORTCUTS, Grid, mesh_section, model_section,
                            train_section)
from data import sentiment

SHORTCUTS = {
    "init_from": "init_from",
    "train": "data.train",
    "valid": "data.valid",
    "unlabeled": "data.unlabeled",
    "format": "data.format",
    "max_len": "data.max_len",
    "pattern": "pet.pattern",
    "labels": "pet.labels",
    "words": "pet.words",
    "shots": "pet.shots",
    "loss": "pet.loss",
    "unlabeled_weight": "pet.unlabeled_weight",
    "unlabeled_batch": "pet.unlabeled_batch",
    **FINE_TUNING_SHORTCUTS,
}


def zero(c: ml_collections.ConfigDict) -> None:
  """Zero-shot: no training; the MLM of init_from is scored as it is."""
  c.train.steps = 0
  c.pet.shots = 0


def smoke(c: ml_collections.ConfigDict) -> None:
  """A run of seconds that still learns the synthetic task from scratch
  (tests/test_pet_train.py)."""
  c.model.update(width=32, num_layers=1, num_heads=2, mlp_dim=64, dropout=0.0)
  c.data.synthetic.update(num_train=200, num_valid=200, num_unlabeled=0)
  c.train.update(steps=60, batch_size=16, learning_rate=1e-2, warmup_steps=5, log_every=20,
                 checkpoint_every=1000)
  c.eval.batch_size = 200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "pet"
  c.seed = 0  # also draws the K-shot sample: seeds vary the shots and the initialisation
  c.init_from = ""  # an MLM workdir of train.py or convert.py; '' = a fresh model

  c.data = ml_collections.ConfigDict(dict(
      train="synthetic",  # 'synthetic' or a file in `format` ('' with train.steps=0)
      valid="synthetic",  # the evaluation set: 'synthetic' or a file in `format`
      unlabeled="",  # texts for the MLM loss: '', 'synthetic' or a file in `format`
      format="jsonl",  # jsonl ({"text", "label"} lines) | tsv (text<TAB>label)
      max_len=32,  # tokens per input including [CLS] and [SEP]; the text is cut to fit
      mask_rate=0.15,  # BERT masking of the unlabelled texts
      # a fresh model's tokenizer (init_from brings its own): char-level, from the texts
      tokenizer="char", vocab_size=0, min_count=1,
      synthetic=dict(num_train=2000, num_valid=1000, num_unlabeled=2000, seed=0),
  ))

  c.pet = ml_collections.ConfigDict(dict(
      pattern=sentiment.PATTERN,  # one {text}, [MASK] slots
      labels=sentiment.LABELS,  # the labels as the data writes them
      words=sentiment.WORDS,  # the verbalizer: one word per label, as many tokens as slots
      shots=8,  # training examples per label, drawn with the seed (0 = all)
      loss="mlm",  # mlm (the post's) | labels (objectives/pet.py says why each)
      unlabeled_weight=1.0,  # weight of the MLM loss on data.unlabeled
      unlabeled_batch=16,  # unlabelled texts per step
  ))

  # a fresh model's architecture; with init_from only dropout and attention_dropout apply
  c.model = model_section(width=64, num_layers=2, num_heads=4, mlp_dim=128, dropout=0.1,
                          position="rope", max_len=512)

  c.train = train_section(
      steps=150, batch_size=16, learning_rate=2e-3, warmup_steps=15, schedule="linear",
      log_every=50, checkpoint_every=1000, keep_checkpoints=1)

  c.eval = ml_collections.ConfigDict(dict(batch_size=250, at_end=True))
  c.mesh = mesh_section()

  return variants.apply(c, variants.parse(arg), SHORTCUTS, {"smoke": smoke, "zero": zero})


def sweep() -> Grid:
  """2, 8 and 32 shots per label at seeds 0, 1, 2 (ROOT/shots-2_seed-0, ...)."""
  return Grid(axes={"shots": [2, 8, 32]}, seeds=[0, 1, 2])

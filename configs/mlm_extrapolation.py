r"""Length extrapolation of an MLM: train at length 64, evaluate at 64 ... 1024.

The experiment of the entropy-invariance post (docs/techniques.md sections 1 and 7): does the
log-n attention scale, lambda = log(n)/log(512)/sqrt(d), keep MLM accuracy up at lengths longer
than the training length, where the standard 1/sqrt(d) scale decays?

Commands (from the repository root):

  # the quickstart: standard and log-n (RoPE, seed 0) on the shipped Chinese novel
  # (corpus=hongloumeng, char-level, like the post), both rows and their difference
  # (about 6 minutes on 2 idle CPU cores; resumable, skips finished runs)
  python sweep.py --config configs/mlm_extrapolation.py --root runs/quickstart \
      --baseline scale=standard
  # one run of it, and a table of any runs
  python train.py --config configs/mlm_extrapolation.py:scale=standard --workdir runs/std
  python evaluate.py --workdirs runs/quickstart/* --table --baseline scale=standard
  # the study of docs/results/mlm_extrapolation.md: 3000 steps, three seeds, 64 ... 4096
  # (6 runs of ~5 minutes each on 2 idle cores, plus evaluation)
  python sweep.py --config configs/mlm_extrapolation.py --sweep seeds --root runs/zh \
      --variant steps=3000,warmup=200,lengths=64+128+256+512+1024+2048+4096 \
      --baseline scale=standard

Variants (combine with commas): scale=standard|logn|logn_causal|logn_qwen|none|entropy_norm,
position=NAME (none, learned, sinusoidal, rope, shaw, xl, t5, deberta, alibi, kerple: every
encoding in model/positions/, docs/variants.md), rope_layout=interleaved|half,
rope_scaling=none|pi|ntk|dynamic_ntk|yarn|rerope, rope_factor=F, rerope_window=N, relative_clip=K,
attention=..., norm=post|pre|rmsnorm, activation=..., width=N, layers=N, heads=N, mlp=N,
corpus=hongloumeng|synthetic|reviews|FILE|GLOB, format=text|jsonl,
tokenizer=char|wobert|wordpiece, vocab=N, valid=FRACTION, steps=N, seed=N,
batch=N, lr=X, warmup=N, length=N, lengths=64+128+256, entropy=true (also measure the attention
entropy by length at the end), max_len=N, smoke (a run of seconds, for tests).
position=learned gets a table of the training length (its rows past it would never be
trained), so longer eval.lengths are recorded as refused (shown 'refused' in tables) unless
max_len=N is named.
Any value can also be overridden with --config.a.b=value; the model section holds every model
field at its declared default (docs/variants.md), e.g. --config.model.t5_shared=false.

Sweeps: sweep() is the quickstart, scale standard vs logn (RoPE) at seed 0 (2 runs,
ROOT/scale-standard_seed-0 ...); `--sweep seeds` is the same at seeds 0, 1, 2 (6 runs);
`--sweep grid` is every encoding (position rope, sinusoidal, learned, t5, alibi, none, xl,
shaw, deberta, kerple) x scale standard, logn at seeds 0, 1, 2 (60 runs). All are
configs.common.Grid: the seed varies slowest, so `--only seed=0` is a whole comparison at one
seed. The table groups the seeds (mean ± std per length); `--baseline` adds paired
differences with a 95% interval:

  # the study's grid (docs/results/mlm_extrapolation.md section 3): 3000 steps, seven
  # lengths, attention entropy at the end; 8-12 minutes a run on 2 idle cores, training and
  # evaluation (KERPLE 8, Shaw and DeBERTa 10-12), about 3 hours a seed
  python sweep.py --config configs/mlm_extrapolation.py --sweep grid --root runs/grid \
      --variant steps=3000,warmup=200,lengths=64+128+256+512+1024+2048+4096,entropy=true
  python sweep.py --config configs/mlm_extrapolation.py --sweep grid --root runs/grid \
      --variant steps=3000,warmup=200,lengths=64+128+256+512+1024+2048+4096,entropy=true \
      --slurm runs/grid.sbatch --slurm_time 01:00:00       # then: sbatch runs/grid.sbatch
  python evaluate.py --workdirs runs/grid/* --table --baseline position=rope,scale=standard \
      --plot runs/grid/accuracy.png
  python evaluate.py --workdirs runs/grid/* --table --entropy --plot runs/grid/entropy.png

Expected result (docs/results/mlm_extrapolation.md): the defaults are the smallest model
found to attend sharply at 64 within a CPU budget (width 128, 2 layers, 2 heads, MLP 512,
batch 64 x 64 tokens, AdamW 2e-3, ~40,000 tokens/s on 2 idle cores). The quickstart's 1400
steps reach about 34% accuracy at 64; there log-n was ahead of standard by only 0.0-0.8 points
at 128 ... 1024 (seed 0). At 3000 steps over three seeds log-n led by +5.2 and +6.1 points at
512 and 1024 (95% intervals above zero), less than the post at 128 and 256 and behind it at
4096.
The post's table (MLM accuracy %, RoFormer-small trained at 64):

  | n        | 64    | 128   | 256   | 512   | 1024  |
  |----------|-------|-------|-------|-------|-------|
  | standard | 43.27 | 36.53 | 23.02 | 15.12 | 11.54 |
  | log-n    | 43.11 | 41.17 | 34.04 | 20.15 | 13.58 |
"""
from __future__ import annotations

import ml_collections

from configs import variants
from configs.common import Grid, mesh_section, model_section, train_section

SHORTCUTS = {
    "scale": "model.scale",
    "position": "model.position",
    "rope_layout": "model.rope_layout",
    "rope_scaling": "model.rope_scaling",
    "rope_factor": "model.rope_scaling_factor",
    "rerope_window": "model.rerope_window",
    "relative_clip": "model.relative_clip",
    "attention": "model.attention",
    "norm": "model.norm",
    "activation": "model.activation",
    "remat": "model.remat",
    "layers": "model.num_layers",
    "width": "model.width",
    "heads": "model.num_heads",
    "mlp": "model.mlp_dim",
    "corpus": "data.corpus",
    "format": "data.format",
    "tokenizer": "data.tokenizer",
    "vocab": "data.vocab_size",
    "valid": "data.valid_fraction",
    "length": "data.train_length",
    "steps": "train.steps",
    "batch": "train.batch_size",
    "lr": "train.learning_rate",
    "warmup": "train.warmup_steps",
    "seed": "seed",
    "lengths": "eval.lengths",
    "entropy": "eval.entropy",
    "max_len": "model.max_len",
}


def smoke(c: ml_collections.ConfigDict) -> None:
  """A run of seconds: tiny model, tiny corpus, short lengths."""
  c.model.update(width=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=128)
  c.data.corpus = "synthetic"
  c.data.synthetic.update(num_docs=40, doc_len=400)
  c.data.train_length = 32
  c.train.update(steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=2, log_every=2,
                 checkpoint_every=3)
  c.eval.update(lengths=(32, 64), max_tokens=512)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "mlm"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      # 'hongloumeng' (shipped, data/texts/), 'synthetic' or 'reviews' (generated), a file,
      # or a glob
      corpus="hongloumeng",
      format="text",  # text | jsonl
      doc_separator="line",  # text: one document per line, or blank_line
      text_field="text",  # jsonl: field holding the document
      encoding_errors="strict",  # strict: refuse invalid UTF-8; replace: substitute U+FFFD
      tokenizer="char",  # char | wordpiece
      vocab_size=0,  # char: keep the most frequent (0 = all); wordpiece: size to train
      min_count=1,  # char: drop rarer characters to [UNK]
      vocab_file="",  # wordpiece: load this vocab.txt instead of training
      lowercase=True,  # wordpiece
      valid_fraction=0.05,
      # the held-out split is drawn with this seed, not the run's: every training seed is
      # scored on the same text, so seeds vary the model, not the test set
      split_seed=0,
      train_length=64,
      mask_rate=0.15,
      # the embedded corpus (data/synthetic.py): a Zipfian Markov chain over `vocab` symbols
      # with `branching` successors each, plus spans repeated from up to max_distance back
      synthetic=dict(num_docs=400, doc_len=3000, vocab=128, branching=12, exponent=1.2,
                     repeat_prob=0.5, span_min=16, span_max=48, max_distance=256, seed=0),
  ))

  # every model field at its declared default, so any of them can be overridden
  # a small model that reaches sharp attention at length 64 within the CPU budget, where the
  # scale can matter (docs/results/mlm_extrapolation.md, the budget table)
  c.model = model_section(width=128, num_layers=2, num_heads=2, mlp_dim=512, dropout=0.1,
                          position="rope", scale="logn", logn_n0=512, max_len=4096)

  c.train = train_section(steps=1400, batch_size=64, learning_rate=2e-3, warmup_steps=100,
                          schedule="cosine", log_every=100, checkpoint_every=500,
                          keep_checkpoints=2)

  c.eval = ml_collections.ConfigDict(dict(
      lengths=(64, 128, 256, 512, 1024),
      max_tokens=16384,  # per length, so every length is scored on the same amount of text
      batch_tokens=16384,
      seed=0,
      at_end=True,  # evaluate and print the length table when training finishes
      # with at_end, also measure the mean attention entropy by length (entropy.json, and the
      # run's summary.json): the mechanism of the log-n scale, measured on every run
      entropy=False,
  ))

  options = variants.parse(arg)
  c.mesh = mesh_section()
  c = variants.apply(c, options, SHORTCUTS, {"smoke": smoke})
  # Synthesizers ignore q.k, so the default RoPE cannot apply; unless a position is named they
  # get learned positions (bound to model.max_len, like the synthesizer itself).
  if c.model.attention.startswith("synthesizer") and "position" not in options:
    c.model.position = "learned"
  # A learned table trains only the rows of positions it sees (0 .. train_length - 1): rows
  # beyond would be scored at their random initial values, so the table is the training
  # length unless max_len is named, and longer evaluation lengths are recorded as refused.
  if c.model.position == "learned" and "max_len" not in options:
    c.model.max_len = c.data.train_length
  return c


SEEDS = (0, 1, 2)
SCALES = ("standard", "logn")
# every encoding of model/positions/ that the grid compares, in the table's order
GRID_POSITIONS = ("rope", "sinusoidal", "learned", "t5", "alibi", "none", "xl", "shaw",
                  "deberta", "kerple")


def sweep() -> Grid:
  """The quickstart: the post's comparison, standard vs log-n scale (RoPE), seed 0."""
  return Grid(axes={"scale": SCALES}, seeds=(0,))


def sweeps() -> dict[str, Grid]:
  """The named sweeps besides sweep() (sweep.py --sweep NAME): the comparison over three
  seeds, and every position encoding x both scales over three seeds."""
  return {"seeds": Grid(axes={"scale": SCALES}, seeds=SEEDS),
          "grid": Grid(axes={"position": GRID_POSITIONS, "scale": SCALES}, seeds=SEEDS)}

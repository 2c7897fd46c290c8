"""A HuggingFace BERT / RoFormer masked LM as an MLM workdir of this codebase, and back.

An imported workdir is an MLM run at step 0, written by the same functions train.py uses:
config.json (the given experiment config, with the checkpoint's architecture as its model
section and its vocabulary as a WordPiece tokenizer), tokenizer.json, and an orbax checkpoint
of a TrainState whose parameters are the checkpoint's and whose optimizer state is fresh
(AdamW moments at zero, step 0). So evaluate.py scores it unchanged, train.py continues it
from step 0 under the config's train section (configs/workdir.py reads the config back:
a fine-tuning run whose learning-rate warmup starts at the imported weights), and a
contrastive run starts from it with init_from=. hf_source.json records where it came from.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp

from data.tokenizers import SPECIALS, WordPieceTokenizer, read_vocab
from interop import hf
from interop.hf import ConversionError
from model.encoder import MlmModel
from training import mlm
from training import workdir as wd
from training.checkpoint import Checkpointer, restore_params
from training.optimizer import make_optimizer
from training.state import TrainState
from utils.cli import load_config_file
from utils.files import atomic_write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "mlm_extrapolation.py")


@contextlib.contextmanager
def _written_whole(target: str, overwrite: bool):
  """A temporary directory beside target that becomes target when the block succeeds (an
  existing target is replaced only with overwrite); nothing is left on failure."""
  if os.path.exists(target) and os.listdir(target) and not overwrite:
    raise ConversionError(f"{target} exists and is not empty; choose another directory or "
                          "pass --overwrite to replace it")
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(target))}.", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would become the directory's mode
  try:
    yield tmp
    if os.path.exists(target):
      shutil.rmtree(target)
    os.rename(tmp, target)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def checkpoint_tokenizer(hf_dir: str, vocab_size: int):
  """(our tokenizer of the checkpoint's vocab.txt, row of each of our ids in the checkpoint's
  tables, how its tokenizer splits text)."""
  path = os.path.join(hf_dir, "vocab.txt")
  if not os.path.exists(path):
    raise ConversionError(f"{hf_dir} has no vocab.txt; the converter reads WordPiece "
                          "(BERT-style) vocabularies")
  words = read_vocab(path)
  if len(words) != vocab_size:
    raise ConversionError(f"vocab.txt has {len(words)} tokens but config.json's vocab_size is "
                          f"{vocab_size}; they must describe the same table")
  missing = [s for s in SPECIALS if s not in words]
  if missing:
    raise ConversionError(f"vocab.txt lacks the special tokens {missing}; this codebase's "
                          f"MLM needs all of {list(SPECIALS)}")
  settings = hf.tokenizer_settings(hf_dir)
  tok = WordPieceTokenizer.from_vocab(words, lowercase=settings["lowercase"],
                                      strip_accents=settings["strip_accents"],
                                      chinese_chars=settings["chinese_chars"])
  row = {w: i for i, w in enumerate(words)}
  return tok, [row[w] for w in tok.vocab], settings


def experiment_config(spec: str, fields: dict, lowercase: bool):
  """The experiment config of spec (an MLM config file[:variants]) with the checkpoint's
  model fields and a WordPiece tokenizer; evaluation lengths past a learned table dropped."""
  config = load_config_file(spec)
  if config.get("task", "mlm") != "mlm":
    raise ConversionError(f"--config {spec} is a {config.task!r} config; an imported "
                          "checkpoint is an MLM run: pass an MLM config (the default is "
                          "configs/mlm_extrapolation.py)")
  with config.unlocked():
    config.model.update({k: v for k, v in fields.items() if k != "vocab_size"})
    config.data.update(tokenizer="wordpiece", lowercase=lowercase, vocab_file="")
    if fields["position"] == "learned":
      kept = [n for n in config.eval.lengths if n <= fields["max_len"]]
      config.eval.lengths = tuple(kept) or (min(config.data.train_length, fields["max_len"]),)
  mlm.check_config(config)
  return config


def checkpoint_params(tensors: dict, cfg, arch, perm, hf_config: dict, shapes) -> dict:
  """Our parameter tree (shapes: MlmModel(cfg)'s, from eval_shape) from a state dict."""
  prefix = arch.name
  if f"{prefix}.embeddings.word_embeddings.weight" not in tensors or not any(
      n.startswith("cls.predictions.") for n in tensors):
    raise ConversionError(f"the checkpoint has no {prefix}.* encoder with an MLM head "
                          f"(cls.predictions.*); save a {arch.hf_class}")
  hf.head_tensors(tensors, arch, hf_config, prefix)
  rows = hf.tensor_map(cfg, arch)
  missing = [t.hf for t in rows if t.hf not in tensors]
  extra = hf.unexpected(tensors, {t.hf for t in rows})
  if missing or extra:
    what = (f"lacks {missing[:3]}" if missing else "") + (" and " if missing and extra else "")
    what += f"has tensors {extra[:3]} that no parameter here corresponds to" if extra else ""
    raise ConversionError(f"the checkpoint {what}; it is not the {arch.hf_class} that its "
                          "config.json describes")
  params = {}
  for t in rows:
    node, shape = params, shapes
    for key in t.ours[:-1]:
      node, shape = node.setdefault(key, {}), shape[key]
    value = hf.to_ours(t, tensors[t.hf], shape[t.ours[-1]].shape)
    node[t.ours[-1]] = jnp.asarray(value[perm] if t.vocab else value)
  if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(shapes):
    raise AssertionError("tensor_map does not cover MlmModel's parameters")  # a bug here
  return params


def save_run(directory: str, config, tokenizer, params, source: dict | None = None) -> None:
  """A workdir of train.py holding params at step 0 with a fresh optimizer state (and, from
  an import, hf_source.json: where the parameters came from)."""
  wd.prepare(directory, config)
  tokenizer.save(directory)
  if source is not None:
    atomic_write_json(os.path.join(directory, "hf_source.json"), source)
  ckpt = Checkpointer(directory, async_save=False)
  try:
    ckpt.save(0, TrainState.create(params, make_optimizer(config.train)), {}, force=True)
  finally:
    ckpt.close()


def import_hf(hf_dir: str, workdir: str, config_spec: str = DEFAULT_CONFIG,
              overwrite: bool = False) -> str:
  """Writes workdir from a save_pretrained directory; returns what to run next."""
  hf_config = hf.read_json_file(os.path.join(hf_dir, "config.json"))
  arch, fields = hf.model_fields(hf_config)
  tok, perm, settings = checkpoint_tokenizer(hf_dir, fields["vocab_size"])
  config = experiment_config(config_spec, fields, settings["lowercase"])
  model = MlmModel(mlm.model_config(config, tok.vocab_size))
  shapes = jax.eval_shape(lambda: mlm.init_params(model, jax.random.PRNGKey(0),
                                                  config.data.train_length))
  params = checkpoint_params(hf.read_tensors(hf_dir), model.cfg, arch, perm, hf_config, shapes)
  source = {"directory": os.path.abspath(hf_dir), "architecture": arch.hf_class,
            "config": hf_config, "tokenizer": settings}
  with _written_whole(workdir, overwrite) as tmp:
    save_run(tmp, config, tok, params, source)
  lines = [f"{workdir}: {arch.hf_class} ({model.cfg.num_layers} layers, width "
           f"{model.cfg.width}, {tok.vocab_size} tokens) as an MLM run at step 0 of "
           f"{config.train.steps}",
           f"  evaluate: python evaluate.py --workdir {workdir}",
           f"  train on: python train.py --config configs/workdir.py:{workdir} --workdir "
           f"{workdir}"]
  if settings["tokenizer_class"] and "Bert" not in settings["tokenizer_class"]:
    print(f"note: the checkpoint's tokenizer is {settings['tokenizer_class']}; the workdir's "
          "splits text as BertTokenizer does (RoFormerTokenizer segments Chinese words with "
          "jieba first, so its multi-character entries are never produced here)",
          file=sys.stderr)
  return "\n".join(lines)


def export_hf(workdir: str, out_dir: str, overwrite: bool = False) -> str:
  """Writes an MLM workdir's latest checkpoint as a save_pretrained directory."""
  if not os.path.isdir(workdir):
    raise ConversionError(f"workdir {workdir!r} does not exist")
  config = wd.load_config(workdir)
  if config.get("task", "mlm") != "mlm":
    raise ConversionError(f"{workdir} is a {config.task!r} run; only MLM workdirs export as "
                          "masked LMs")
  run = mlm.load(workdir, with_params=False)
  tok, cfg = run.tokenizer, run.model.cfg
  if tok.kind != "wordpiece":
    raise ConversionError(f"{workdir} has a {tok.kind} tokenizer, which BertTokenizer cannot "
                          "reproduce; export a run trained with data.tokenizer=wordpiece")
  arch = hf.architecture_of(cfg)
  restored = restore_params(workdir, lambda: mlm.init_params(
      run.model, jax.random.PRNGKey(0), config.data.train_length), config.train)
  if restored is None:
    raise ConversionError(f"{workdir} has no checkpoint to export; train it first")
  step, params = restored
  with _written_whole(out_dir, overwrite) as tmp:
    hf.write_checkpoint(tmp, hf.hf_config(cfg, arch),
                        hf.export_tensors(jax.device_get(params), cfg, arch))
    hf.write_tokenizer_files(tmp, tok.vocab, tok.settings(), cfg.max_len)
  return (f"{out_dir}: {arch.hf_class} from step {step} of {workdir}; load it with "
          f"transformers.AutoModelForMaskedLM.from_pretrained({out_dir!r})")

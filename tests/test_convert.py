"""convert.py: HuggingFace BERT / RoFormer masked LMs as MLM workdirs, and back.

* Import: small random BertForMaskedLM (model.safetensors) and RoFormerForMaskedLM with
  embedding_size < hidden_size (pytorch_model.bin), every parameter perturbed so that no
  bias or norm is at its initial value, saved by save_pretrained with a BERT-layout vocab.txt
  ([UNK] ... [MASK] after [unused] rows, so the vocabulary is reordered on import): the
  workdir's model, restored from its checkpoint, gives PyTorch HF's logits to 1e-4.
* Export: random models of this codebase (BERT-like; RoFormer-like without a token-type
  table and with gelu_tanh) written by convert.py --to_hf load in transformers'
  AutoModelForMaskedLM and in Flax HF's models with the parameters converted as
  FlaxAutoModelForMaskedLM.from_pretrained(from_pt=True) converts them (no torch needed),
  with our logits. Where torch is missing, imports are checked against Flax HF instead: the
  exported directories imported back give Flax HF's logits.
* Import then export reproduces every tensor of the checkpoint (RoFormer's rotary table
  included: ours against the one HF computed), token by token.
* evaluate.py scores an imported workdir, and configs/workdir.py gives train.py exactly its
  config; a checkpoint or model the other side cannot represent is refused in one line and
  nothing is written, and so is a convert.py command without one direction.
"""
import functools
import importlib.util
import json
import os
import types

import jax
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
from flax.traverse_util import flatten_dict  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

import entry_points  # noqa: E402
from configs import workdir as workdir_config  # noqa: E402
from configs.mlm_extrapolation import get_config  # noqa: E402
from data.tokenizers import WordPieceTokenizer  # noqa: E402
from interop import hf  # noqa: E402
from interop.convert import export_hf, import_hf, save_run  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.encoder import MlmModel  # noqa: E402
from training import mlm  # noqa: E402
from training import workdir as wd  # noqa: E402
from training.checkpoint import restore_params  # noqa: E402
from utils.files import read_json  # noqa: E402

SMOKE = os.path.join(entry_points.ROOT, "configs", "mlm_extrapolation.py") + ":smoke"
WORDS = (["[PAD]"] + [f"[unused{i}]" for i in range(1, 6)] + ["[UNK]", "[CLS]", "[SEP]",
                                                               "[MASK]"] +
         list("的一是了人我在有他这中大来上国，。") + ["hello", "world", "##s", "##ing"])
WORDS += [f"w{i}" for i in range(96 - len(WORDS))]
HF = dict(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
          intermediate_size=64, max_position_embeddings=64)
N = 12
IDS = np.random.RandomState(0).randint(1, len(WORDS), (2, N))
VALID = np.arange(N)[None] < np.array([[N], [8]])  # the second sequence padded after 8
IDS[~VALID] = 0


def _write_vocab(directory):
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("".join(f"{w}\n" for w in WORDS))


def _torch():
  return pytest.importorskip("torch")


def _torch_logits(model):
  import torch
  with torch.no_grad():
    return model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(VALID.astype(int))
                 ).logits.numpy()


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg, params, tokens, valid):  # one compiled program per model config
  return MlmModel(cfg).apply({"params": params}, tokens, valid)


def _in_words_order(cfg, tokenizer, params):
  """Our logits at IDS (token ids of vocab.txt, WORDS), columns in WORDS' order."""
  index = {w: i for i, w in enumerate(tokenizer.vocab)}
  order = np.array([index[w] for w in WORDS])  # our id of each vocab.txt row
  return np.asarray(_logits(cfg, params, order[IDS], VALID))[..., order]


def _ours(workdir):
  """(the run, its logits as _in_words_order) of a workdir's model, from its checkpoint."""
  run = mlm.load(workdir, with_params=False)
  _, params = restore_params(workdir, lambda: mlm.init_params(
      run.model, jax.random.PRNGKey(0), run.config.data.train_length), run.config.train)
  return run, _in_words_order(run.model.cfg, run.tokenizer, params)


# ---------------------------------------------------------------------------------- import

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """arch -> (save_pretrained directory, its PyTorch logits at IDS)."""
  torch = _torch()
  out = {}
  for arch in ("bert", "roformer"):
    directory = str(tmp_path_factory.mktemp(f"hf_{arch}"))
    torch.manual_seed(0)
    if arch == "bert":
      model = transformers.BertForMaskedLM(transformers.BertConfig(**HF))
    else:
      model = transformers.RoFormerForMaskedLM(transformers.RoFormerConfig(embedding_size=24,
                                                                           **HF))
    with torch.no_grad():
      for name, p in model.named_parameters():
        if "embed_positions" in name:  # RoFormer's fixed rotary table
          continue
        # embeddings as small as a trained BERT's (std ~0.03), where LayerNorm's epsilon
        # (1e-12 here, 1e-6 by flax's default) shows in the logits
        p.add_((0.02 if "embeddings." in name else 0.1) * torch.randn_like(p))
    model.eval()
    model.save_pretrained(directory, safe_serialization=arch == "bert")
    _write_vocab(directory)
    out[arch] = directory, _torch_logits(model)
  return out


@pytest.fixture(scope="module")
def imported(checkpoint, tmp_path_factory):
  """arch -> the checkpoint imported as a workdir of the smoke config."""
  root = tmp_path_factory.mktemp("imported")
  out = {}
  for arch, (directory, _) in checkpoint.items():
    out[arch] = str(root / arch)
    import_hf(directory, out[arch], SMOKE)
  return out


@pytest.mark.parametrize("arch", ["bert", "roformer"])
def test_imported_workdir_gives_hf_pytorch_logits(checkpoint, imported, arch):
  run, got = _ours(imported[arch])
  cfg = run.model.cfg
  assert (cfg.norm_epsilon, cfg.type_vocab_size, cfg.scale, cfg.dropout) == (1e-12, 2,
                                                                            "standard", 0.1)
  assert (cfg.position, cfg.embed_width) == (("learned", 32) if arch == "bert" else
                                             ("rope", 24))
  want = checkpoint[arch][1]
  # 1e-5 rather than 1e-4: tight enough that flax's default epsilon would fail it (3e-5)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert run.config.data.tokenizer == "wordpiece" and run.config.train.steps == 6  # smoke's


@pytest.mark.parametrize("arch", ["bert", "roformer"])
def test_import_then_export_reproduces_every_tensor(checkpoint, imported, arch, tmp_path):
  directory = checkpoint[arch][0]
  original = (load_file(os.path.join(directory, hf.SAFETENSORS)) if arch == "bert" else
              hf.read_tensors(directory))
  export_hf(imported[arch], str(tmp_path / "out"))
  exported = load_file(str(tmp_path / "out" / hf.SAFETENSORS))
  tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
  assert set(exported) == set(original) - tied
  with open(tmp_path / "out" / "vocab.txt", encoding="utf-8") as f:
    rows = [WORDS.index(w) for w in f.read().split("\n")[:-1]]  # exported row -> original
  assert sorted(rows) == list(range(len(WORDS)))
  for name, value in exported.items():
    by_token = "word_embeddings" in name or name == "cls.predictions.bias"
    want = original[name][rows] if by_token else original[name]
    if name.endswith("embed_positions.weight"):  # computed by us, and by HF
      np.testing.assert_allclose(value, want, atol=1e-6)
    else:
      np.testing.assert_array_equal(value, want, err_msg=name)
  config = read_json(str(tmp_path / "out" / "config.json"))
  source = read_json(os.path.join(directory, "config.json"))
  for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "hidden_act", "layer_norm_eps", "type_vocab_size",
              "max_position_embeddings", "hidden_dropout_prob", "embedding_size"):
    assert config.get(key) == source.get(key), key


def test_evaluate_py_scores_an_imported_workdir_and_train_py_would_resume_it(imported, capsys):
  workdir = imported["bert"]
  # evaluate.py's main with its flags, in this process: a subprocess would add seconds of
  # start-up to what is the same code
  assert entry_points.call_main("evaluate", "--workdir", workdir, "--lengths", "32",
                                "--progress=false") == 0
  assert json.loads(capsys.readouterr().out)["32"]["predictions"] > 0
  result = read_json(os.path.join(workdir, "eval.json"))
  assert result["step"] == 0 and 0.0 <= result["lengths"]["32"]["accuracy"] <= 1.0
  # train.py --config configs/workdir.py:W resumes W under exactly its own config
  saved = read_json(os.path.join(workdir, "config.json"))
  assert wd.config_changes(saved, wd.config_to_dict(workdir_config.get_config(workdir))) == (
      [], [])


# ---------------------------------------------------------------------------------- export

def _our_model(arch):
  """A config of ours that arch represents, and random parameters (norms and biases too).

  The BERT-like one has the imported BERT's model config (HF's defaults: dropout 0.1, a
  token-type table of 2, gelu), so that one compiled forward serves both; the RoFormer-like
  one has no token-type table (exported as zeros) and gelu_tanh (HF's gelu_new)."""
  fields = dict(width=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=64, scale="standard",
                norm_epsilon=1e-12)
  if arch == "bert":
    fields.update(position="learned", type_vocab_size=2, attention_dropout=0.1)
  else:
    fields.update(position="rope", activation="gelu_tanh")
  config = get_config("smoke,tokenizer=wordpiece")
  config.model.update(fields)
  tok = WordPieceTokenizer.from_vocab(WORDS)
  model = MlmModel(mlm.model_config(config, tok.vocab_size))

  shapes = jax.eval_shape(lambda: mlm.init_params(model, jax.random.PRNGKey(0), N))
  rng = np.random.RandomState(1)

  def draw(path, leaf):  # norm scales around 1, everything else around 0
    centre = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return (centre + 0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

  return config, tok, jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """arch -> (exported directory, our logits at IDS in vocab.txt's order)."""
  out = {}
  for arch in ("bert", "roformer"):
    root = tmp_path_factory.mktemp(f"ours_{arch}")
    config, tok, params = _our_model(arch)
    save_run(str(root / "run"), config, tok, params)
    export_hf(str(root / "run"), str(root / "hf"))
    cfg = mlm.model_config(config, tok.vocab_size)
    out[arch] = str(root / "hf"), _in_words_order(cfg, tok, params)
  return out


def _flax_model(directory):
  """Flax HF's model of an exported directory, its parameters converted from the PyTorch-named
  safetensors as from_pretrained(from_pt=True) converts them (the same transformers
  function), without from_pretrained's random initialisation, which runs op by op (seconds
  on a CPU) only to be overwritten."""
  from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
  config = transformers.AutoConfig.from_pretrained(directory)
  cls = transformers.FlaxAutoModelForMaskedLM._model_mapping[type(config)]
  model = cls(config, _do_init=False)
  shapes = types.SimpleNamespace(params=model.params_shape_tree,
                                 base_model_prefix=model.base_model_prefix)
  params = convert_pytorch_state_dict_to_flax(
      load_file(os.path.join(directory, hf.SAFETENSORS)), shapes)
  missing = set(flatten_dict(model.params_shape_tree)) - set(flatten_dict(params))
  assert not missing, missing
  return model, params


@pytest.mark.parametrize("arch", ["bert", "roformer"])
def test_export_loads_in_flax_hf(exported, arch, tmp_path):
  # Flax RoFormer computes its own rotary table (it ignores the exported embed_positions),
  # so this also checks our rotation against HF's independently of the table we write
  directory, ours = exported[arch]
  model, params = _flax_model(directory)
  assert type(model).__name__ == {"bert": "FlaxBertForMaskedLM",
                                  "roformer": "FlaxRoFormerForMaskedLM"}[arch]
  # our vocab order is the exported one: WORDS rows are the tokens' exported ids
  with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
    ids = {w: i for i, w in enumerate(f.read().split("\n")[:-1])}
  order = np.array([ids[w] for w in WORDS])
  forward = jax.jit(lambda p, tokens, mask: model(tokens, mask, params=p).logits)
  flax_logits = np.asarray(forward(params, order[IDS], VALID.astype(np.int32)))
  np.testing.assert_allclose(flax_logits[..., order], ours, atol=1e-4, rtol=1e-4)
  if importlib.util.find_spec("torch") is not None:
    return  # imports are checked against PyTorch HF (test_imported_workdir_gives_hf_...)
  # without torch: the exported safetensors imported again give Flax HF's logits
  import_hf(directory, str(tmp_path / "back"), SMOKE)
  np.testing.assert_allclose(_ours(str(tmp_path / "back"))[1], flax_logits[..., order],
                             atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["bert", "roformer"])
def test_export_loads_in_pytorch_hf(exported, arch):
  _torch()
  directory, ours = exported[arch]
  model = transformers.AutoModelForMaskedLM.from_pretrained(directory).eval()
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  vocab = tok.get_vocab()
  order = np.array([vocab[w] for w in WORDS])
  import torch
  with torch.no_grad():
    logits = model(input_ids=torch.tensor(order[IDS]),
                   attention_mask=torch.tensor(VALID.astype(int))).logits.numpy()
  np.testing.assert_allclose(logits[..., order], ours, atol=1e-4, rtol=1e-4)
  assert tok.tokenize("我在hello worlds，") == ["我", "在", "hello", "world", "##s", "，"]


# -------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("edit,named", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"rotary_value": True}, "rotary_value"),
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"is_decoder": True}, "is_decoder"),
    ({"model_type": "gpt2"}, "model_type"),
    ({"hidden_size": None}, "hidden_size"),
])
def test_unrepresentable_hf_config_is_refused_in_one_line(edit, named):
  config = dict(HF, model_type="roformer" if "rotary_value" in edit else "bert")
  config.update(edit)
  config = {k: v for k, v in config.items() if v is not None}
  with pytest.raises(hf.ConversionError) as e:
    hf.model_fields(config)
  assert named in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("edit,named", [
    (dict(scale="logn"), "scale='logn'"),
    (dict(position="t5"), "position=t5"),
    (dict(norm="pre"), "norm='pre'"),
    (dict(activation="squareplus"), "activation=squareplus"),
    (dict(position="rope", rope_layout="half"), "rope_layout='half'"),
    (dict(embedding_size=16), "embedding_size=16"),
])
def test_unrepresentable_model_is_refused_in_one_line(edit, named):
  fields = dict(vocab_size=20, width=32, num_heads=2, position="learned", scale="standard")
  with pytest.raises(hf.ConversionError) as e:
    hf.architecture_of(ModelConfig.from_dict(dict(fields, **edit)))
  assert named in str(e.value) and "\n" not in str(e.value)


def test_untied_decoder_is_refused_and_nothing_is_written(checkpoint, tmp_path):
  source = checkpoint["bert"][0]
  tensors = load_file(os.path.join(source, hf.SAFETENSORS))
  words = tensors["bert.embeddings.word_embeddings.weight"]
  tensors["cls.predictions.decoder.weight"] = words + 1.0
  directory = tmp_path / "untied"
  directory.mkdir()
  save_file(tensors, str(directory / hf.SAFETENSORS), metadata={"format": "pt"})
  _write_vocab(str(directory))
  with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
    (directory / "config.json").write_text(json.dumps(dict(json.load(f),
                                                           tie_word_embeddings=False)))
  with pytest.raises(hf.ConversionError) as e:
    import_hf(str(directory), str(tmp_path / "w"), SMOKE)
  assert "decoder" in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "w") and os.listdir(tmp_path) == ["untied"]


def test_convert_py_needs_one_direction():
  p = entry_points.run("convert.py", "--workdir", "w", check=False)
  assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--from_hf" in p.stderr, p.stderr

"""HuggingFace BERT and RoFormer masked LMs <-> this codebase's MlmModel: the one map.

Both directions read the same tables: FIELDS (our model field <-> the HF config key), FIXED
(what the two architectures are in our terms: softmax attention, the 1/sqrt(d) scale,
post-LN, no mask beyond padding; RoFormer's rotary layout) and tensor_map (our parameter
path <-> the PyTorch state-dict name, with how the array is laid out). Everything here is
numpy and JSON: safetensors files are read and written with the safetensors package's
numpy API, so neither direction needs torch; only a pytorch_model.bin is read with torch.

What differs between the two layouts:
  * nn.Linear stores [out, in]; our Dense kernels are [in, out], and the attention
    projections keep the heads as axes ([width, heads, head_dim] in, [heads, head_dim, width]
    out);
  * a BERT vocab.txt has [PAD] at 0 and [UNK] [CLS] [SEP] [MASK] further on (100-103 in
    bert-base-chinese); our tokenizers put all five at 0-4 (data/tokenizers.py), so the rows
    of the token table and of the output bias are reordered on import. An exported directory
    has our order in both its vocab.txt and its tensors;
  * BERT and RoFormer add a token-type row to every embedding (type 0 for one segment: our
    model.type_vocab_size table), RoFormer may embed narrower than the model
    (model.embedding_size, embeddings_project), and both use LayerNorm epsilon 1e-12
    (model.norm_epsilon);
  * RoFormer's rotary table (encoder.embed_positions) is not a parameter here: it is the
    sinusoidal table our rope (rope_layout=interleaved, base 10000) computes, checked on
    import and written on export.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np

from model.positions.rope_scaling import rope_inv_freq
from utils.errors import UserError

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


class ConversionError(UserError):
  """A checkpoint or workdir that the converter cannot represent on the other side."""


@dataclasses.dataclass(frozen=True)
class Architecture:
  name: str  # HF model_type
  hf_class: str  # the masked-LM class of transformers
  position: str  # our model.position
  max_positions: int  # HF's default max_position_embeddings


ARCHITECTURES = {
    "bert": Architecture("bert", "BertForMaskedLM", "learned", 512),
    "roformer": Architecture("roformer", "RoFormerForMaskedLM", "rope", 1536),
}

# our field -> (HF config key, HF's default where config.json may omit it; None: required)
FIELDS = {
    "vocab_size": ("vocab_size", None),
    "width": ("hidden_size", None),
    "num_layers": ("num_hidden_layers", None),
    "num_heads": ("num_attention_heads", None),
    "mlp_dim": ("intermediate_size", None),
    "dropout": ("hidden_dropout_prob", 0.1),
    "attention_dropout": ("attention_probs_dropout_prob", 0.1),
    "norm_epsilon": ("layer_norm_eps", 1e-12),
    "type_vocab_size": ("type_vocab_size", 2),
}
# our model fields as both architectures have them (RoFormer's rotary ones besides)
FIXED = {"attention": "softmax", "scale": "standard", "norm": "post", "causal": False,
         "window": 0}
ROTARY = {"rope_layout": "interleaved", "rope_scaling": "none", "rope_base": 10000.0}
# our activation -> HF hidden_act; HF names that compute the same function on import too
ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "gelu_sigmoid": "quick_gelu"}
HF_ALIASES = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
# HF config values that these architectures can have but our model cannot represent
REFUSED = {
    "is_decoder": (True, "a decoder (causal LM)"),
    "add_cross_attention": (True, "cross-attention"),
    "rotary_value": (True, "rotary_value=true (RoPE applied to the values too)"),
}
# tensors of a checkpoint that hold no parameter of ours (a pretraining checkpoint's pooler
# and next-sentence head; position_ids buffers of older versions)
UNUSED = (".pooler.", "cls.seq_relationship.", ".position_ids")
TYPE_TABLE = "{}.embeddings.token_type_embeddings.weight"


# ------------------------------------------------------------------------------ configs

def model_fields(hf: dict) -> tuple[Architecture, dict]:
  """(architecture, our model fields) of an HF config.json, or a ConversionError naming the
  first thing our model cannot represent."""
  arch = ARCHITECTURES.get(hf.get("model_type"))
  if arch is None:
    raise ConversionError(f"config.json has model_type={hf.get('model_type')!r}; the converter "
                          f"reads {' and '.join(sorted(ARCHITECTURES))} masked LMs")
  for key, (value, what) in REFUSED.items():
    if hf.get(key) == value:
      raise ConversionError(f"config.json sets {key}={json.dumps(value)}: {what} has no "
                            "equivalent in this codebase's encoder")
  if arch.name == "bert" and hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"config.json sets position_embedding_type="
                          f"{hf['position_embedding_type']!r}; only BERT's absolute (learned) "
                          "positions are converted")
  act = hf.get("hidden_act", "gelu")
  ours = HF_ALIASES.get(act) or {v: k for k, v in ACTIVATIONS.items()}.get(act)
  if ours is None:
    raise ConversionError(f"config.json sets hidden_act={act!r}; converted activations: "
                          f"{sorted([*ACTIVATIONS.values(), *HF_ALIASES])}")
  missing = [key for key, default in FIELDS.values() if default is None and key not in hf]
  if missing:
    raise ConversionError(f"config.json lacks {missing}; it is not a complete "
                          f"{arch.hf_class} config")
  fields = {name: hf.get(key, default) for name, (key, default) in FIELDS.items()}
  fields.update(FIXED, position=arch.position, activation=ours,
                max_len=hf.get("max_position_embeddings", arch.max_positions))
  if arch.name == "roformer":
    fields.update(ROTARY)
    embedding = hf.get("embedding_size") or hf["hidden_size"]
    fields["embedding_size"] = 0 if embedding == hf["hidden_size"] else embedding
  # JSON numbers: the fields' own types (dropout 0 in a config.json is an int)
  for name in ("dropout", "attention_dropout", "norm_epsilon"):
    fields[name] = float(fields[name])
  return arch, fields


def architecture_of(cfg) -> Architecture:
  """The HF architecture that represents our model cfg exactly, or a ConversionError naming
  what does not fit."""
  by_position = {a.position: a for a in ARCHITECTURES.values()}
  arch = by_position.get(cfg.position)
  if arch is None:
    raise ConversionError(
        f"position={cfg.position} has no HF equivalent here: position=learned exports as BERT "
        "and position=rope as RoFormer")
  wanted = dict(FIXED, **(ROTARY if arch.name == "roformer" else {}))
  differ = [f"{k}={getattr(cfg, k)!r}" for k, v in wanted.items() if getattr(cfg, k) != v]
  if differ:
    expect = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    raise ConversionError(f"{arch.hf_class} cannot represent model {', '.join(differ)}: it "
                          f"computes {expect}")
  if cfg.activation not in ACTIVATIONS:
    raise ConversionError(f"activation={cfg.activation} has no HF hidden_act; exportable: "
                          f"{sorted(ACTIVATIONS)}")
  if arch.name == "bert" and cfg.embed_width != cfg.width:
    raise ConversionError("BERT embeds at the model width: model.embedding_size="
                          f"{cfg.embedding_size} exports only as RoFormer (position=rope)")
  return arch


def hf_config(cfg, arch: Architecture) -> dict:
  """The config.json of our model cfg as arch (architecture_of(cfg))."""
  out = {key: getattr(cfg, name) for name, (key, _) in FIELDS.items()}
  out.update(architectures=[arch.hf_class], model_type=arch.name,
             hidden_act=ACTIVATIONS[cfg.activation], max_position_embeddings=cfg.max_len,
             # a model without a token-type table exports a table of zeros (export_tensors)
             type_vocab_size=cfg.type_vocab_size or 2, pad_token_id=0,
             initializer_range=0.02, tie_word_embeddings=True)
  if arch.name == "bert":
    out["position_embedding_type"] = "absolute"
  else:
    out.update(embedding_size=cfg.embed_width, rotary_value=False)
  return out


# ------------------------------------------------------------------------------ tensors

@dataclasses.dataclass(frozen=True)
class Tensor:
  """One parameter: its path in our tree, its name in HF's state dict, and its layout.

  kind: "table" (the same array), "vector" (a bias or norm vector, reshaped to our shape),
  "kernel" (nn.Linear's [out, in] weight, transposed; in_axes: how many leading axes of our
  kernel are its input: 2 for the attention output [heads, head_dim, width]).
  vocab: rows indexed by token id (reordered between the two vocabulary orders).
  """
  ours: tuple
  hf: str
  kind: str
  in_axes: int = 1
  vocab: bool = False


def tensor_map(cfg, arch: Architecture) -> list[Tensor]:
  """Every parameter of MlmModel(cfg) with its HF name, for arch."""
  p, rows = arch.name, []

  def linear(ours, hf, in_axes=1):
    rows.extend([Tensor((*ours, "kernel"), f"{hf}.weight", "kernel", in_axes),
                 Tensor((*ours, "bias"), f"{hf}.bias", "vector")])

  def norm(ours, hf):
    rows.extend([Tensor((*ours, "scale"), f"{hf}.weight", "vector"),
                 Tensor((*ours, "bias"), f"{hf}.bias", "vector")])

  enc = ("encoder",)
  rows.append(Tensor((*enc, "token_embed", "embedding"), f"{p}.embeddings.word_embeddings.weight",
                     "table", vocab=True))
  if cfg.type_vocab_size:
    rows.append(Tensor((*enc, "token_type_embed", "embedding"), TYPE_TABLE.format(p), "table"))
  if arch.position == "learned":
    rows.append(Tensor((*enc, "position_embed", "embedding"),
                       f"{p}.embeddings.position_embeddings.weight", "table"))
  norm((*enc, "final_norm"), f"{p}.embeddings.LayerNorm")
  if cfg.embed_width != cfg.width:
    linear((*enc, "embed_project"), f"{p}.embeddings_project")
  for i in range(cfg.num_layers):
    ours, hf = (*enc, f"block_{i}"), f"{p}.encoder.layer.{i}"
    for name in ("query", "key", "value"):
      linear((*ours, "attention", name), f"{hf}.attention.self.{name}")
    linear((*ours, "attention", "out"), f"{hf}.attention.output.dense", in_axes=2)
    norm((*ours, "attention_norm"), f"{hf}.attention.output.LayerNorm")
    linear((*ours, "mlp", "fc1"), f"{hf}.intermediate.dense")
    linear((*ours, "mlp", "fc2"), f"{hf}.output.dense")
    norm((*ours, "mlp_norm"), f"{hf}.output.LayerNorm")
  linear(("head_dense",), "cls.predictions.transform.dense")
  norm(("head_norm",), "cls.predictions.transform.LayerNorm")
  rows.append(Tensor(("output_bias",), "cls.predictions.bias", "vector", vocab=True))
  return rows


def to_ours(t: Tensor, array: np.ndarray, shape) -> np.ndarray:
  """An HF tensor in our layout (shape: our parameter's)."""
  array = np.asarray(array, np.float32)
  if t.kind == "kernel":
    array = array.T
  if int(np.prod(array.shape)) != int(np.prod(shape)) or (t.kind == "table" and
                                                         array.shape != tuple(shape)):
    raise ConversionError(f"{t.hf} has shape {list(array.shape)} where config.json implies "
                          f"{list(shape)}")
  return array.reshape(shape)


def to_hf(t: Tensor, array) -> np.ndarray:
  """Our parameter in HF's layout."""
  array = np.asarray(array, np.float32)
  if t.kind == "kernel":
    return np.ascontiguousarray(array.reshape(int(np.prod(array.shape[:t.in_axes])), -1).T)
  return array.reshape(-1) if t.kind == "vector" else array


def rotary_table(positions: int, head_dim: int) -> np.ndarray:
  """RoFormer's embed_positions: sin(m theta_t) in the first half, cos in the second, with
  our rope's frequencies theta_t (the same rotation as rope_layout=interleaved)."""
  angles = np.arange(positions, dtype=np.float64)[:, None] * rope_inv_freq(head_dim, 10000.0)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def head_tensors(tensors: dict, arch: Architecture, hf: dict, prefix: str) -> None:
  """Checks the tensors that are no parameter of ours: the decoder (tied to the token table,
  or refused), RoFormer's rotary table (ours, or refused). Removes them from tensors."""
  words = tensors[f"{prefix}.embeddings.word_embeddings.weight"]
  decoder = tensors.pop("cls.predictions.decoder.weight", None)
  if decoder is not None and not np.array_equal(np.asarray(decoder), np.asarray(words)):
    raise ConversionError("cls.predictions.decoder.weight differs from the word embeddings: "
                          "an untied decoder has no equivalent here (the MLM head is tied)")
  if decoder is None and hf.get("tie_word_embeddings") is False:
    raise ConversionError("config.json sets tie_word_embeddings=false but the checkpoint has no "
                          "decoder weight; the MLM head here is tied to the word embeddings")
  bias = tensors.pop("cls.predictions.decoder.bias", None)
  if bias is not None:
    if "cls.predictions.bias" not in tensors:
      tensors["cls.predictions.bias"] = bias
    elif not np.array_equal(np.asarray(bias), np.asarray(tensors["cls.predictions.bias"])):
      raise ConversionError("cls.predictions.decoder.bias differs from cls.predictions.bias")
  table = tensors.pop(f"{prefix}.encoder.embed_positions.weight", None)
  if arch.name == "roformer" and table is not None:
    want = rotary_table(table.shape[0], hf["hidden_size"] // hf["num_attention_heads"])
    if table.shape != want.shape or not np.allclose(table, want, atol=1e-5):
      raise ConversionError(f"{prefix}.encoder.embed_positions.weight is not RoFormer's "
                            "sinusoidal table (base 10000) that the rotary encoding here uses")


def export_tensors(params, cfg, arch: Architecture) -> dict:
  """Our parameters as HF's state dict (the decoder is tied: not written)."""
  out = {}
  for t in tensor_map(cfg, arch):
    value = params
    for key in t.ours:
      value = value[key]
    out[t.hf] = to_hf(t, value)
  if not cfg.type_vocab_size:  # HF always adds a token-type row: rows of zeros add nothing
    out[TYPE_TABLE.format(arch.name)] = np.zeros((2, cfg.embed_width), np.float32)
  if arch.name == "roformer":
    out[f"{arch.name}.encoder.embed_positions.weight"] = rotary_table(cfg.max_len, cfg.head_dim)
  return out


# ------------------------------------------------------------------------ checkpoint files

def _renamed(name: str) -> str:
  """TF-era names of LayerNorm parameters (older BERT checkpoints) as PyTorch's."""
  if name.endswith(".gamma"):
    return name[:-len("gamma")] + "weight"
  if name.endswith(".beta"):
    return name[:-len("beta")] + "bias"
  return name


def _torch_file(path: str) -> dict:
  try:
    import torch
  except ImportError:
    raise ConversionError(f"{path} is a PyTorch file and reading it needs torch (pip install "
                          "torch, or the hf extra); a model.safetensors needs only "
                          "safetensors") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def read_tensors(directory: str) -> dict:
  """{name: array} of a save_pretrained directory: model.safetensors (sharded or not),
  else pytorch_model.bin (sharded or not)."""
  from safetensors.numpy import load_file

  def shards(index):
    with open(os.path.join(directory, index), encoding="utf-8") as f:
      return sorted(set(json.load(f)["weight_map"].values()))

  if os.path.exists(os.path.join(directory, SAFETENSORS)):
    files, load = [SAFETENSORS], load_file
  elif os.path.exists(os.path.join(directory, SAFETENSORS_INDEX)):
    files, load = shards(SAFETENSORS_INDEX), load_file
  elif os.path.exists(os.path.join(directory, TORCH_BIN)):
    files, load = [TORCH_BIN], _torch_file
  elif os.path.exists(os.path.join(directory, TORCH_INDEX)):
    files, load = shards(TORCH_INDEX), _torch_file
  else:
    found = sorted(os.path.basename(f) for f in glob.glob(os.path.join(directory, "*")))
    raise ConversionError(f"{directory} has no {SAFETENSORS} or {TORCH_BIN} (it holds "
                          f"{found[:8]}); pass a directory written by save_pretrained")
  tensors = {}
  for name in files:
    tensors.update({_renamed(k): v for k, v in load(os.path.join(directory, name)).items()})
  return tensors


def read_json_file(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConversionError(f"{path} does not exist; pass a directory written by "
                          "save_pretrained (config.json, weights, vocab.txt)") from None
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path} is not valid JSON ({e})") from None


def tokenizer_settings(directory: str) -> dict:
  """How the checkpoint's tokenizer splits text (tokenizer_config.json, BertTokenizer's
  defaults where absent): {lowercase, strip_accents, chinese_chars, tokenizer_class}."""
  path = os.path.join(directory, "tokenizer_config.json")
  c = read_json_file(path) if os.path.exists(path) else {}
  return {"lowercase": bool(c.get("do_lower_case", True)),
          "strip_accents": c.get("strip_accents"),
          "chinese_chars": bool(c.get("tokenize_chinese_chars", True)),
          "tokenizer_class": c.get("tokenizer_class")}


def write_tokenizer_files(directory: str, vocab, settings: dict, max_len: int) -> None:
  """vocab.txt (our id order), tokenizer_config.json and special_tokens_map.json: what
  AutoTokenizer needs for BertTokenizer(Fast) to split text as ours does."""
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("".join(f"{w}\n" for w in vocab))
  specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
              "cls_token": "[CLS]", "mask_token": "[MASK]"}
  config = dict(specials, tokenizer_class="BertTokenizer", do_lower_case=settings["lowercase"],
                strip_accents=settings["strip_accents"],
                tokenize_chinese_chars=settings["chinese_chars"], model_max_length=max_len)
  for name, content in (("tokenizer_config.json", config),
                        ("special_tokens_map.json", specials)):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, ensure_ascii=False)


def write_checkpoint(directory: str, config: dict, tensors: dict) -> None:
  from safetensors.numpy import save_file
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
  # transformers loads a safetensors file only with this format tag
  save_file(tensors, os.path.join(directory, SAFETENSORS), metadata={"format": "pt"})


def unexpected(tensors: dict, known) -> list[str]:
  """Names of the checkpoint that are neither parameters of ours nor known to be unused."""
  return sorted(n for n in tensors if n not in known and not any(u in n for u in UNUSED))


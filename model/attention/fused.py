"""Which implementation computes a kernel (`model.attention_impl`): its own einsums, or its
fused form (KernelVariant.fused) through one jax.nn.dot_product_attention call.

  einsum: the kernel's own code (the default; every pinned number is of this path);
  fused:  dot_product_attention with implementation=None, JAX's choice: its XLA attention
          (jax 0.10 picks XLA on every backend; the call is where a fused kernel plugs in);
  cudnn:  dot_product_attention with implementation="cudnn": cuDNN's fused attention on an
          NVIDIA GPU, which takes bfloat16 / float16 q, k, v and head dimensions that are
          multiples of 8 up to 128 (256 from Hopper on).

What a fused form cannot express is refused at start-up, one line naming the reason (declared
next to the form, FusedForm.cannot), rather than quietly run another way: a run asked to use
the fused kernel does, or does not start. The one exception is evaluation of the attention
entropy, which needs the probabilities the fused call never forms: that forward pass runs
the kernel's einsum path (model/attention/layer.py), the same function to rounding.
"""
from __future__ import annotations

import jax

from model.attention import ATTENTIONS
from model.positions import POSITIONS
from model.scales import SCALES
from model.variants import Field, non_default
from utils.errors import ConfigError

IMPLEMENTATIONS = ("einsum", "fused", "cudnn")
# the argument each value passes to jax.nn.dot_product_attention
DOT_PRODUCT_ATTENTION = {"fused": None, "cudnn": "cudnn"}
CUDNN_DTYPES = ("bfloat16", "float16")


def _check(value, cfg):
  if value not in IMPLEMENTATIONS:
    return f"unknown attention_impl; valid names: {list(IMPLEMENTATIONS)}"
  if value == "einsum":
    return None
  kernel = ATTENTIONS.get(cfg.attention)
  if kernel is None or kernel.fused is None:
    able = "|".join(k.name for k in ATTENTIONS.values() if k.fused is not None)
    return (f"attention={cfg.attention} has no fused form (only attention={able} has one); "
            "use attention_impl=einsum")
  position = POSITIONS.get(cfg.position)
  needs = position.terms(cfg) if position is not None else frozenset()
  missing = sorted(needs - kernel.fused.honours)
  if missing:
    return (f"position={cfg.position}{non_default(cfg, position)} cannot take the fused path: "
            f"{kernel.fused.cannot[missing[0]]}; use attention_impl=einsum")
  scale = SCALES.get(cfg.scale)
  if scale is not None and scale.logits_transform is not None:
    return (f"scale={cfg.scale} transforms the full [q, k] logit matrix, which the fused call "
            "never forms; use attention_impl=einsum")
  if cfg.attention_dropout > 0:
    return ("the fused call forms no attention probabilities to drop out; set "
            "model.attention_dropout=0 or use attention_impl=einsum")
  if value == "cudnn":
    if cfg.dtype not in CUDNN_DTYPES:
      return (f"cuDNN's fused attention takes {' or '.join(CUDNN_DTYPES)}, not "
              f"model.dtype={cfg.dtype}; set model.dtype=bfloat16 or use attention_impl=fused")
    if cfg.head_dim % 8 or cfg.head_dim > 256:
      return (f"cuDNN needs a head dimension that is a multiple of 8 and <= 256 (128 before "
              f"Hopper), not {cfg.head_dim}; use attention_impl=fused")
  return None


ATTENTION_IMPL = Field(
    "attention_impl", "einsum", "einsum (the kernel's own code) | fused (jax.nn."
    "dot_product_attention, JAX's choice of implementation) | cudnn (its cuDNN kernel, GPU, "
    "bf16/f16)", _check, eval_time=True, bad=("flash",))


def build_check(cfg) -> None:
  """Run when the attention layer is built: cuDNN needs a GPU in this process."""
  if cfg.attention_impl == "cudnn" and jax.default_backend() != "gpu":
    raise ConfigError(f"model.attention_impl=cudnn needs an NVIDIA GPU, and this process runs "
                      f"on {jax.default_backend()}; use attention_impl=fused (XLA's attention) "
                      "or einsum")


def implementation(cfg):
  """dot_product_attention's `implementation` argument for cfg (not for einsum)."""
  return DOT_PRODUCT_ATTENTION[cfg.attention_impl]

"""Registry of attention kernels: one entry per `model.attention` name, one file per kernel."""
from __future__ import annotations

from utils.errors import ConfigError

from model.attention import linear, nystrom, performer, synthesizer
from model.attention.base import AttentionInputs, KernelSpec
from model.attention.softmax import masked_softmax, softmax_attention

# O(n) and landmark kernels never form the [q, k] logits: of the position terms they can only
# rotate (RoPE), and of the masks only key padding (+ causal where a prefix sum exists).
# Synthesizers ignore q.k altogether: no position terms, but any mask.
_SYNTHESIZER = dict(supports=frozenset(), validate=synthesizer.validate,
                    max_length=lambda cfg: cfg.max_len)

ATTENTIONS = {
    "softmax": KernelSpec(fn=softmax_attention, name="softmax"),
    "linear": KernelSpec(fn=linear.linear_attention, name="linear",
                         supports=frozenset({"rotate"}), masks=frozenset({"causal"})),
    "performer": KernelSpec(fn=None, module=performer.PerformerAttention, name="performer",
                            supports=frozenset({"rotate"}), masks=frozenset({"causal"}),
                            validate=performer.validate),
    "nystrom": KernelSpec(fn=nystrom.nystrom_attention, name="nystrom",
                          supports=frozenset({"rotate"}), masks=frozenset(),
                          validate=nystrom.validate),
    "synthesizer_dense": KernelSpec(
        fn=None, module=lambda cfg: synthesizer.Synthesizer(cfg, "dense"),
        name="synthesizer_dense", **_SYNTHESIZER),
    "synthesizer_random": KernelSpec(
        fn=None, module=lambda cfg: synthesizer.Synthesizer(cfg, "random"),
        name="synthesizer_random", **_SYNTHESIZER),
    "synthesizer_factorized": KernelSpec(
        fn=None, module=lambda cfg: synthesizer.Synthesizer(cfg, "factorized"),
        name="synthesizer_factorized", **_SYNTHESIZER),
}


def get_attention(name: str) -> KernelSpec:
  if name not in ATTENTIONS:
    raise ConfigError(f"unknown attention {name!r}; valid names: {sorted(ATTENTIONS)}")
  return ATTENTIONS[name]


__all__ = ["ATTENTIONS", "get_attention", "AttentionInputs", "KernelSpec", "masked_softmax"]

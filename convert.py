"""Convert HuggingFace BERT / RoFormer masked LMs to and from MLM workdirs of this codebase.

  python convert.py --from_hf DIR --workdir W [--config configs/mlm_extrapolation.py:VARIANTS]
  python convert.py --to_hf DIR --workdir W

--from_hf reads a save_pretrained directory of BertForMaskedLM or RoFormerForMaskedLM
(config.json, model.safetensors or pytorch_model.bin, vocab.txt, tokenizer_config.json) and
writes W: an MLM run at step 0 of the given experiment config, with the checkpoint's
architecture and vocabulary (interop/convert.py). --to_hf writes W's latest checkpoint as a
directory that transformers.AutoModelForMaskedLM.from_pretrained loads. A directory that
exists is replaced only with --overwrite.
"""
from __future__ import annotations

from absl import flags

from utils.cli import run_main
from utils.errors import UserError

_FROM_HF = flags.DEFINE_string("from_hf", None, "Import this save_pretrained directory.")
_TO_HF = flags.DEFINE_string("to_hf", None, "Export the workdir into this directory.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The workdir to write (--from_hf) or read "
                               "(--to_hf).")
_CONFIG = flags.DEFINE_string("config", None, "--from_hf: the MLM config file[:variants] of "
                              "the imported run (default configs/mlm_extrapolation.py); its "
                              "model section becomes the checkpoint's architecture.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the output directory if it exists.")
flags.mark_flags_as_required(["workdir"])


def main(argv) -> int:
  del argv
  if (_FROM_HF.value is None) == (_TO_HF.value is None):
    raise UserError("pass one of --from_hf DIR (import into --workdir) or --to_hf DIR (export "
                    "--workdir)")
  if _TO_HF.value is not None and _CONFIG.value is not None:
    raise UserError("--config applies to --from_hf only: an export reads the workdir's config")
  from interop.convert import DEFAULT_CONFIG, export_hf, import_hf
  if _FROM_HF.value is not None:
    print(import_hf(_FROM_HF.value, _WORKDIR.value, _CONFIG.value or DEFAULT_CONFIG,
                    overwrite=_OVERWRITE.value))
  else:
    print(export_hf(_WORKDIR.value, _TO_HF.value, overwrite=_OVERWRITE.value))
  return 0


if __name__ == "__main__":
  run_main(main)

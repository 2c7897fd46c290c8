"""Checkpoints of other libraries as workdirs of this codebase, and back (hf.py: HuggingFace)."""

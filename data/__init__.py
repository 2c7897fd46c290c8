"""Corpora, tokenizers, and MLM packing/masking."""

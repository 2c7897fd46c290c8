"""Evaluators: MLM accuracy by length, tables."""

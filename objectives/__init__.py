"""Losses and gradient tricks."""

"""Pure linen modules: attention core, position encodings, blocks, encoder, heads."""

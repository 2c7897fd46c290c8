"""What the encoder adds to its token embeddings besides positions: a token-type table and a
narrower embedding width projected to the model width.

Both exist for BERT-family checkpoints (interop/hf.py): BERT and RoFormer add a token-type
(segment) vector to every token embedding, and RoFormer-small-like models embed at
embedding_size < hidden_size and project up (ALBERT's factorised embedding). The defaults add
nothing, so a model without them has exactly the parameters and numbers it always had.
"""
from __future__ import annotations

from model.variants import Field, at_least

TYPE_VOCAB_SIZE = Field(
    "type_vocab_size", 0, "rows of a token-type table added to the embeddings (BERT, "
    "RoFormer: 2); inputs are one segment, so row 0 is added to every token; 0: no table",
    at_least(0), bad=(-1,))
EMBEDDING_SIZE = Field(
    "embedding_size", 0, "width of the token embeddings when not model.width (0): projected "
    "to the width after the embedding norm, and the MLM head projects back to it (RoFormer's "
    "embeddings_project)", at_least(0), bad=(-1,))


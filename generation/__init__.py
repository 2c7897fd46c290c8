"""Autoregressive generation: decoding strategies (strategies.py, beam.py) over any model step,
and SimBERT's similar-sentence generation with a UniLM sentence encoder (seq2seq.py) ranked
by the model's own sentence embedding (similar.py)."""

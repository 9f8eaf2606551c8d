"""Flax NNX transformer encoder-decoder: attention, layers, the model, decoding.

No data loading, no Hydra, no I/O: everything here takes typed config objects and arrays.
"""

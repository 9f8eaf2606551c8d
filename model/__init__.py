"""The Flax NNX encoder-decoder: what a researcher reads and changes.

    config.py          ModelConfig (typed, validated) and the attention types
    attention.py       multi-head attention and its masks, written out by hand
    attention_maps.py  the one way attention weights leave the model (a recorded forward)
    layers.py          embeddings, positions, feed-forward, encoder and decoder layers
    transformer.py     the encoder-decoder, with packing and incremental (KV-cached) decoding
    decoding.py        greedy and beam search, and the jitted decode function
    dropout.py matmul.py flops.py   dropout masks, the dense matmul, parameter and FLOP counts
    gates.py           Hard Concrete head gates (sampling, the evaluation gate, expected L0)
    gate_params.py     a model's gates: their log_alphas, the L0 penalty, what training logs
    pruning.py         physical head pruning: a smaller model's parameters (and optimizer state)

May import jax, flax and numpy only: no data loading, no Hydra, no I/O, nothing from data/ or
train/. Everything takes typed config objects and arrays.
"""

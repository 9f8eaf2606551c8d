"""The benchmark's peers: plain scripts for another interpreter, not modules to import.

    torch_train.py   the benchmark's train step in PyTorch (nn.Transformer), eager and torch.compile
    hf_generate.py   Hugging Face transformers' generate, greedy and beam, on the same model shape

`python -m train.bench --torch-python PYTHON` runs them as `PYTHON peers/<script> ...` and reads
their JSON lines (train/bench/peer_compare.py). They import torch and transformers, which the
project's own environment never has, and nothing from this project. The folder is a package only
so that an installed copy of the project carries the scripts.
"""

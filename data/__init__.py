"""Data: corpora in, fixed-shape int32 batches out.

    config.py      DataConfig (typed, validated), special token ids
    sources.py     load_splits: one entry point for every source, dispatching to
                   embedded.py (the shipped corpus), hub.py and hub_files.py (Hugging Face Hub:
                   datasets and Parquet files), local_files.py
    splits.py      split names, columns, held-out validation, caps
    tokenizer.py   the shared-vocabulary BPE tokenizer (HF tokenizers)
    pipeline.py    prepare(): tokenize and cache the splits, keyed by corpus and settings
    batch.py       Batch, the typed pytree every step reads, and its two builders
    packing.py     packed training batches with exact resume
    buckets.py     length-bucketed one-example-per-row batches (decoding, analyses)
    prefetch.py    a background thread that prepares batches ahead of the step
    build_bible_corpus.py bible_verses.py bible_pairing.py   how the embedded corpus was built
    corpora/       the embedded corpus files

May import numpy, datasets, tokenizers and pyarrow (jax only in prefetch.py, when asked to
place batches on devices); never train/ or Hydra: train/ converts its config into DataConfig.
"""

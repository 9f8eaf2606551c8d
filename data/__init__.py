"""Data: sources (embedded corpus, HF Hub, local files), tokenizer, fixed-shape batching."""

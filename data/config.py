"""The data pipeline's typed configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from model.config import ConfigError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, in this order


@dataclass(frozen=True)
class DataConfig:
    """Where pairs come from, how they are tokenized, and how they are batched.

    `source` picks the loader: "embedded" (a corpus shipped under data/corpora), "hub"
    (datasets.load_dataset(hub_id, hub_config)) or "local" (files under `path`).
    """

    name: str = "bible_en_es"
    source: str = "embedded"  # embedded | hub | local
    task: str = "translation"  # translation (BLEU, chrF) | summarization (ROUGE)
    path: Optional[str] = "data/corpora/bible_en_es"  # relative paths resolve against the repo root
    format: str = "jsonl"  # local files: text | jsonl | csv | tsv | parquet
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    hub_revision: Optional[str] = None
    # Parquet files to read instead of datasets.load_dataset(hub_id, hub_config): split name (as
    # the corpus names it) -> a glob relative to the repository root at hub_revision, e.g.
    # {"train": "iwslt2017-de-en/train/*.parquet"} on refs/convert/parquet (data/hub_files.py).
    hub_data_files: Optional[Dict[str, str]] = None
    source_lang: str = "en"
    target_lang: str = "es"
    source_field: Optional[str] = None  # column holding the source; None = translation[source_lang]
    target_field: Optional[str] = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: Optional[str] = "test"
    max_train_examples: Optional[int] = None  # cap for quick runs on large corpora
    max_eval_examples: Optional[int] = None  # cap for validation/test sets
    # Pairs held out of train (deterministically) when a corpus has no validation split; 0 = error.
    holdout_size: int = 1000
    # tokenizer
    tokenizer: str = "bpe"  # bpe | unigram (HF tokenizers)
    vocab_size: int = 8000
    shared_vocab: bool = True  # one vocabulary for source and target (enables tied embeddings)
    # Training pairs the tokenizer learns from (the first N of train); None = all. Learning a
    # vocabulary from a few hundred thousand pairs gives the same merges as from millions.
    tokenizer_max_examples: Optional[int] = 200_000
    # lengths, in subword tokens including EOS
    max_source_len: int = 128
    max_target_len: int = 128
    overlong: str = "truncate"  # truncate | drop
    # batching: training packs pairs into max_tokens // (max_source_len + max_target_len) rows
    # (data/packing.py); generation uses its own buckets (train/evals/generation.py)
    max_tokens: int = 4096  # padded source + target tokens per batch, at most
    prefetch: int = 2  # batches prepared ahead on a background thread
    cache_dir: str = ".cache/data"  # tokenizers and tokenized datasets, keyed by content

    def validate(self) -> "DataConfig":
        if self.source not in ("embedded", "hub", "local"):
            raise ConfigError(f"data.source={self.source!r} must be embedded, hub or local.")
        if self.task not in ("translation", "summarization"):
            raise ConfigError(f"data.task={self.task!r} must be translation or summarization.")
        if self.source == "hub" and not self.hub_id:
            raise ConfigError("data.source=hub needs data.hub_id (a Hugging Face dataset id).")
        if self.hub_data_files is not None:
            if self.source != "hub":
                raise ConfigError("data.hub_data_files is only read with data.source=hub; remove it.")
            bad = {k: v for k, v in self.hub_data_files.items() if not str(v).endswith(".parquet")}
            if bad or not self.hub_data_files:
                raise ConfigError(
                    f"data.hub_data_files={dict(self.hub_data_files)} must map split names to globs of "
                    f".parquet files (e.g. train: iwslt2017-de-en/train/*.parquet); {bad or 'it is empty'}."
                )
        if self.source == "local" and not self.path:
            raise ConfigError("data=local needs data.path=DIR (a folder with train.* files).")
        if self.format not in ("text", "jsonl", "csv", "tsv", "parquet"):
            raise ConfigError(f"data.format={self.format!r} must be text, jsonl, csv, tsv or parquet.")
        if self.overlong not in ("truncate", "drop"):
            raise ConfigError(f"data.overlong={self.overlong!r} must be truncate or drop.")
        if self.vocab_size < 64:
            raise ConfigError(f"data.vocab_size={self.vocab_size} is too small (need >= 64).")
        longest = max(self.max_source_len, self.max_target_len)
        if self.max_tokens < 2 * longest:
            raise ConfigError(
                f"data.max_tokens={self.max_tokens} cannot hold one pair of "
                f"{self.max_source_len}+{self.max_target_len} tokens; raise it or lower the lengths."
            )
        if not self.shared_vocab:
            # The model ties source/target embeddings and the output projection to one table.
            raise ConfigError(
                "data.shared_vocab=false is not supported: the model uses one joint vocabulary "
                "for source and target; set data.shared_vocab=true."
            )
        if self.tokenizer not in ("bpe", "unigram"):
            raise ConfigError(f"data.tokenizer={self.tokenizer!r} must be bpe or unigram.")
        for name in ("max_train_examples", "max_eval_examples", "tokenizer_max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name}={value} must be >= 1 (or null for no cap).")
        if self.holdout_size < 0:
            raise ConfigError(f"data.holdout_size={self.holdout_size} must be >= 0.")
        if self.max_source_len < 2 or self.max_target_len < 2:
            raise ConfigError("data.max_source_len and data.max_target_len must be >= 2 (a token and EOS).")
        return self


def resolve(path: str, root: Path) -> Path:
    """Relative config paths are relative to the repository root, not the working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p

"""A subword tokenizer (HF `tokenizers`: BPE or Unigram) shared by source and target.

NFKC normalisation, then SentencePiece-style Metaspace pre-tokenization: spaces become `▁`
and are part of the pieces, so decoding restores the spacing and sacrebleu/ROUGE see
ordinary text. Special tokens sit at ids 0..3 (`SPECIAL_TOKENS`). One joint vocabulary
serves both languages because the model ties its embeddings (DataConfig rejects
shared_vocab=false). Trained on the training split only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from data.config import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, DataConfig

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
MIN_FREQUENCY = 2  # pieces seen once are mostly noise (typos, numbers)
LIMIT_ALPHABET = 1000  # rarer characters become <unk> instead of taking vocabulary slots
TRAIN_BATCH = 1000


class SubwordTokenizer:
    """Encode text to ids (without EOS; the pipeline appends it) and decode ids to text."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        for i, tok in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(tok) != i:
                raise ValueError(f"special token {tok!r} must have id {i}")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Subword ids of each text; no BOS/EOS. Batched, parallel inside `tokenizers`."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of one id sequence: stops at the first EOS, drops pad and BOS."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).reshape(-1)
        eos = np.flatnonzero(ids == EOS_ID)
        if eos.size:
            ids = ids[: eos[0]]
        ids = ids[(ids != PAD_ID) & (ids != BOS_ID)]
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def word_ids(self, text: str) -> list[int]:
        """For each subword of `text`, the index of its word in `text.split(" ")`.

        Built from character offsets rather than the pre-tokenizer's word ids, so it stays
        right when NFKC turns a character into a space or runs of spaces occur. A lone `▁`
        piece marks the start of the next word (SentencePiece's convention) and gets that
        word's index; -1 only where no word follows. The EOS the pipeline appends is not
        covered: treat it as -1.
        """
        words = text.split(" ")
        char_word = np.empty(len(text) + 1, dtype=np.int64)  # (len+1,) word index per char
        start = 0
        for w, word in enumerate(words):
            char_word[start : start + len(word)] = w
            char_word[start + len(word)] = -1  # the separating space (or the end)
            start += len(word) + 1
        out = []
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        for lo, hi in enc.offsets:
            covered = char_word[lo:hi]
            covered = covered[covered >= 0]
            if covered.size:
                out.append(int(covered[0]))
            else:  # only a space: the word it introduces
                out.append(int(char_word[hi]) if hi < len(text) else -1)
        return out

    def save(self, path: Path) -> None:
        """Write tokenizer.json atomically (a concurrent reader never sees half a file)."""
        tmp = Path(f"{path}.tmp{os.getpid()}")
        self.tokenizer.save(str(tmp))
        with open(tmp, "rb") as f:  # the bytes on disk before the rename publishes them
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "SubwordTokenizer":
        return cls(Tokenizer.from_file(str(path)))


def build_tokenizer(kind: str) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer and its trainer (vocab size set by the caller)."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK_ID]))
        trainer = trainers.BpeTrainer(
            special_tokens=SPECIAL_TOKENS, min_frequency=MIN_FREQUENCY,
            limit_alphabet=LIMIT_ALPHABET, show_progress=False,
        )
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            special_tokens=SPECIAL_TOKENS, unk_token=SPECIAL_TOKENS[UNK_ID], show_progress=False,
        )
    else:
        raise ValueError(f"tokenizer {kind!r} must be bpe or unigram")
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok, trainer


def train_tokenizer(cfg: DataConfig, train_split) -> SubwordTokenizer:
    """Learn the joint vocabulary from the source and target sides of the training split."""
    tok, trainer = build_tokenizer(cfg.tokenizer)
    trainer.vocab_size = cfg.vocab_size
    n = len(train_split) if cfg.tokenizer_max_examples is None else min(len(train_split), cfg.tokenizer_max_examples)
    pairs = train_split.select_columns(["source", "target"]).select(range(n))

    def texts() -> Iterator[list[str]]:
        for batch in pairs.iter(batch_size=TRAIN_BATCH):
            yield [t for t in batch["source"] if t]
            yield [t for t in batch["target"] if t]

    log.info("Training a %s tokenizer (vocab %d) on %d pairs.", cfg.tokenizer, cfg.vocab_size, n)
    tok.train_from_iterator(texts(), trainer=trainer, length=2 * n)
    return SubwordTokenizer(tok)


def load_or_train(cfg: DataConfig, train_split, folder: Path) -> tuple[SubwordTokenizer, bool]:
    """The tokenizer cached in `folder`, or a freshly trained one saved there.

    Returns (tokenizer, trained). The caller holds the cache lock and chose `folder` by a
    hash of the corpus identity and the tokenizer settings.
    """
    path = folder / TOKENIZER_FILE
    if path.exists():
        try:
            return SubwordTokenizer.load(path), False
        except Exception as e:  # truncated or garbled: train it again rather than fail every run
            log.warning("%s is damaged (%s); training the tokenizer again.", path, str(e).splitlines()[0][:200])
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(cfg, train_split)
    tok.save(path)
    return tok, True

"""Build a verse-aligned English-Spanish Bible corpus with Strong's-number word alignments.

Sources are two public-domain SWORD modules packaged by Debian:
  engWEB2015eb  World English Bible (package sword-text-web)
  spaRV1909eb   Reina-Valera 1909   (package sword-text-sparv)
Both are exported with `mod2imp` (package libsword-utils), cleaned of OSIS markup and
footnotes, paired by verse reference and written as gzipped JSON lines:

  {"id": "Genesis 1:1", "translation": {"en": ..., "es": ...}, "alignment": [[en_i, es_j], ...]}

Word indices index `text.split(" ")`; a pair is linked when both words carry a common
Strong's number. Pairs that are missing, empty or merged on either side, or whose verse
division or Strong's tagging does not match (see tags_disagree, text_shifted), are dropped
and counted by reason. Reading and cleaning the modules is in data/bible_verses.py, the word
links and pairing checks in data/bible_pairing.py. Run from the repository root:

  python -m data.build_bible_corpus --out data/corpora/bible_en_es
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
from pathlib import Path

from data.bible_pairing import align, length_mismatch, tags_disagree, text_shifted
from data.bible_verses import (
    MODULES,
    absorbing_neighbours,
    clean_verse,
    export_module,
    has_text,
    parse_imp,
    strip_subscriptions,
)

HELD_OUT_SIZE = 1000  # pairs in each of validation and test
# Why a verse reference is dropped, in the order main() checks them (stats.json keeps this order).
DROP_REASONS = [
    "missing_es", "missing_en", "empty_en", "empty_es", "merged_en", "merged_es",
    "untagged", "tags_disagree", "text_shifted", "length_ratio",
]  # fmt: skip


def split_hash(ref: str, seed: int) -> int:
    return int(hashlib.sha1(f"{seed}:{ref}".encode("utf-8")).hexdigest(), 16)


def assign_splits(pairs: list[dict], seed: int) -> tuple[dict[str, list[dict]], int]:
    """Deterministic splits by a hash of the reference, independent of input order.

    Pairs whose (en, es) text occurs more than once are never held out, so no validation or
    test pair is identical to a training pair. Of the rest, the HELD_OUT_SIZE lowest hashes go
    to validation, the next HELD_OUT_SIZE to test. Returns the splits and the number of pairs
    kept out of held-out selection as duplicates.
    """
    text_counts = collections.Counter((p["translation"]["en"], p["translation"]["es"]) for p in pairs)
    unique = [p for p in pairs if text_counts[(p["translation"]["en"], p["translation"]["es"])] == 1]
    ranked = sorted(unique, key=lambda p: split_hash(p["id"], seed))
    split_by_id = {p["id"]: "validation" for p in ranked[:HELD_OUT_SIZE]}
    split_by_id |= {p["id"]: "test" for p in ranked[HELD_OUT_SIZE : 2 * HELD_OUT_SIZE]}
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for p in pairs:  # keep canonical Bible order inside each split
        splits[split_by_id.get(p["id"], "train")].append(p)
    return splits, len(pairs) - len(unique)


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """gzip with mtime=0 and no file name so identical content gives identical bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/corpora/bible_en_es"))
    parser.add_argument("--seed", type=int, default=0, help="salt for the split hash")
    args = parser.parse_args()

    verses = {
        lang: {ref: clean_verse(markup) for ref, markup in parse_imp(export_module(module)).items()}
        for lang, module in MODULES.items()
    }
    en, es = verses["en"], verses["es"]
    subscriptions = strip_subscriptions(es)
    absorbing = {lang: absorbing_neighbours(vs) for lang, vs in verses.items()}

    # The pairing checks compare each pair with its neighbours, so run them on every pair
    # that has text and Strong's numbers on both sides, before anything else is dropped.
    comparable = [
        ref for ref in en if ref in es and all(has_text(v[ref]) and v[ref].strongs for v in (en, es))
    ]
    alignments = {ref: align(en[ref], es[ref]) for ref in comparable}
    bad_tags = tags_disagree(en, es, comparable)
    shifted = text_shifted(en, es, alignments)

    # Each verse reference is counted under the first reason that applies, in this order.
    dropped: dict[str, int] = collections.Counter()
    kept: list[str] = []
    for ref in list(en) + [ref for ref in es if ref not in en]:
        if ref not in es:
            reason = "missing_es"  # mostly the WEB deuterocanon, which RV 1909 lacks
        elif ref not in en:
            reason = "missing_en"
        elif not has_text(en[ref]):
            reason = "empty_en"
        elif not has_text(es[ref]):
            reason = "empty_es"
        elif ref in absorbing["en"]:
            reason = "merged_en"
        elif ref in absorbing["es"]:
            reason = "merged_es"
        elif not en[ref].strongs or not es[ref].strongs:
            reason = "untagged"  # no Strong's numbers: the pairing cannot be checked
        elif ref in bad_tags:
            reason = "tags_disagree"
        elif ref in shifted:
            reason = "text_shifted"
        elif length_mismatch(en[ref], es[ref]):
            reason = "length_ratio"
        else:
            kept.append(ref)
            continue
        dropped[reason] += 1

    pairs = [
        {"id": ref, "translation": {"en": en[ref].text, "es": es[ref].text}, "alignment": alignments[ref]}
        for ref in kept
    ]
    splits, duplicates = assign_splits(pairs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_jsonl_gz(args.out / f"{name}.jsonl.gz", rows)

    stats = {
        "modules": MODULES,
        "verses_in_module": {lang: len(vs) for lang, vs in verses.items()},
        "pairs": {name: len(rows) for name, rows in splits.items()},
        "pairs_total": len(pairs),
        "dropped": {reason: dropped[reason] for reason in DROP_REASONS},
        "dropped_total": sum(dropped.values()),
        "es_subscriptions_stripped": subscriptions,
        "duplicate_text_pairs_kept_in_train": duplicates,
        "alignment_links": sum(len(p["alignment"]) for p in pairs),
        "seed": args.seed,
    }
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(stats, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

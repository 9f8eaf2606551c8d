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
and counted by reason. Run from the repository root:

  python -m data.build_bible_corpus --out data/corpora/bible_en_es
"""

from __future__ import annotations

import argparse
import collections
import functools
import gzip
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MODULES = {"en": "engWEB2015eb", "es": "spaRV1909eb"}
APT_HINT = "sudo apt-get install sword-text-web sword-text-sparv libsword-utils"
HELD_OUT_SIZE = 1000  # pairs in each of validation and test

# Verse-pairing checks (see tags_disagree and text_shifted): compare each pair with the
# pairings of verses up to NEARBY apart.
NEARBY = 5
AGREEMENT_FLOOR = 0.2  # Strong's-number Jaccard below this: alignment is noise
AGREEMENT_MARGIN = 0.1  # a nearby pairing agreeing better by this much: shifted tags or text
LEXICON_MIN_DICE = 0.3  # word-translation lexicon learnt from the Strong's links
LEXICON_MIN_LINKS = 3
SHIFT_MIN_EXTRA_HITS = 2  # a nearby pairing translating this many more words ...
SHIFT_MIN_RUN = 3  # ... for this many consecutive pairs marks a verse-division shift
MAX_LENGTH_RATIO = 2.2  # character-length ratio between the sides
DROP_REASONS = [
    "missing_es", "missing_en", "empty_en", "empty_es", "merged_en", "merged_es",
    "untagged", "tags_disagree", "text_shifted", "length_ratio",
]  # fmt: skip

# A whole <w> element with the whitespace after it (attributes, text, whitespace: <w> never
# nests markup in these modules), any other OSIS tag (closing slash, name, attributes,
# self-closing slash), or a run of text.
TOKEN_RE = re.compile(r"<w\b([^>]*)>([^<]*)</w>(\s*)|<(/?)([A-Za-z]+)([^>]*?)(/?)>|([^<]+)")
REF_RE = re.compile(r"^(.+) (\d+):(\d+)$")
STRONG_RE = re.compile(r"([GH])0*(\d+)")
WHITESPACE_RE = re.compile(r"\s+")
# Elements whose whole content is commentary rather than verse text.
SKIPPED_ELEMENTS = {"note", "speaker"}
# A section milestone that starts back matter (the WEB glossary follows Revelation 22:21).
BACK_MATTER_RE = re.compile(r'type="(?:glossary|introduction|front)"')
# Structural milestones (paragraphs, poetry lines, chapters) separate words.
BREAK_ELEMENTS = {"div", "l", "lg", "lb", "chapter", "milestone", "list", "item", "title"}
ENCLITIC_RE = re.compile(r"(?:me|te|se|nos|os|le|les|lo|los|la|las)</transChange>")
NOT_ENCLITIC_HOSTS = {"y", "que", "no", "os", "como", "cuánto", "ellos", "gentes", "josué", "jehová", "dios"}
# No space is inserted before these when markup between two text runs is removed.
NO_SPACE_BEFORE = set(".,;:!?)]”’»—")
NON_WORD_RE = re.compile(r"[^\w]+")


@dataclass
class Verse:
    """A cleaned verse: its words (split on single spaces) and each word's Strong's numbers."""

    words: list[str]
    numbers: list[frozenset[str]]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @functools.cached_property
    def strongs(self) -> frozenset[str]:
        return frozenset().union(*self.numbers)


def export_module(module: str) -> str:
    """Return the `mod2imp` export of a SWORD module, failing loudly if it is unavailable."""
    if shutil.which("mod2imp") is None:
        sys.exit(f"error: mod2imp not found; install it with `{APT_HINT}`")
    result = subprocess.run(["mod2imp", module], capture_output=True, text=True, encoding="utf-8")
    if result.returncode != 0 or "$$$" not in result.stdout:
        reason = (result.stderr.strip().splitlines() or ["no output"])[0]
        sys.exit(f"error: could not export SWORD module {module!r} with mod2imp ({reason}); install `{APT_HINT}`")
    return result.stdout


def parse_imp(text: str) -> dict[str, str]:
    """Map each verse reference ("Genesis 1:1") to its raw OSIS markup, in module order.

    Chapter 0 / verse 0 entries hold book introductions and chapter headings, not verses.
    """
    verses: dict[str, str] = {}
    for entry in text.split("$$$")[1:]:
        ref, _, body = entry.partition("\n")
        match = REF_RE.match(ref.strip())
        if match and int(match.group(2)) > 0 and int(match.group(3)) > 0:
            verses[ref.strip()] = body.replace("\n", " ")
    return verses


@functools.lru_cache(maxsize=None)
def parse_lemma(attrs: str) -> frozenset[str]:
    """Strong's numbers of a <w> element, normalised so H0430 and H430 are equal.

    Handles both `strong:G2424 G5547` and `strong:G1063 strong:G2316`.
    """
    match = re.search(r'lemma="([^"]*)"', attrs)
    if match is None:
        return frozenset()
    return frozenset(p + n for p, n in STRONG_RE.findall(match.group(1)))


def is_enclitic(markup: str, pos: int, previous_text: str) -> bool:
    """Whether the <transChange> opening at `pos` is a pronoun glued to the previous verb.

    Reina-Valera marks some enclitic pronouns as added words, so "sáca</w><transChange>lo"
    must read "sácalo", while "hay allí</w><transChange>también" needs a space. The few
    non-verbs that precede an added pronoun in the text are listed in NOT_ENCLITIC_HOSTS.
    """
    words = previous_text.split()
    return bool(ENCLITIC_RE.match(markup, pos)) and bool(words) and words[-1].lower() not in NOT_ENCLITIC_HOSTS


def clean_verse(markup: str) -> Verse:
    """Strip OSIS markup from one verse, keeping each word's Strong's numbers.

    The markup becomes a list of (text, numbers) runs; a word's numbers are the union over
    the runs it is made of, so punctuation outside <w> simply joins the neighbouring word.
    """
    runs: list[tuple[str, frozenset[str]]] = []
    skip_name, skip_depth = "", 0
    # Removing a footnote, or the boundary between two adjacent <w>/<transChange> elements,
    # can glue words together ("God<note>..</note><w>created"), so remember to add a space.
    pending_space = False
    just_closed_word = False

    def emit(text: str, numbers: frozenset[str]) -> None:
        nonlocal pending_space, just_closed_word
        if not text:
            return
        if "&" in text:
            text = html.unescape(text)
        if pending_space and runs and not runs[-1][0][-1].isspace() and text[0] not in NO_SPACE_BEFORE:
            runs.append((" ", frozenset()))
        pending_space = just_closed_word = False
        runs.append((text, numbers))

    for match in TOKEN_RE.finditer(markup):
        w_attrs, w_text, w_space, closing, name, attrs, self_closing, text = match.groups()
        if skip_depth:
            # Inside a footnote or heading: only track nesting of the same element.
            if name == skip_name and not self_closing:
                skip_depth += -1 if closing else 1
        elif w_text is not None:
            pending_space |= just_closed_word
            emit(w_text, parse_lemma(w_attrs))
            just_closed_word = True
            emit(w_space, frozenset())
        elif text is not None:
            emit(text, frozenset())
        elif name in SKIPPED_ELEMENTS or (name == "title" and not closing and 'canonical="true"' not in attrs):
            # Footnotes, speaker labels and editorial headings are not verse text.
            # Canonical titles (psalm superscriptions) are kept: the Spanish has them in verse 1.
            if not self_closing and not closing:
                skip_name, skip_depth = name, 1
            pending_space = True
        elif name == "transChange":  # words the translators added; they carry no number
            if closing:
                just_closed_word = True
            elif just_closed_word and not is_enclitic(markup, match.end(), runs[-1][0]):
                pending_space = True
        elif name == "q":  # the source sometimes omits the space after a quotation ("”</q>Then")
            pending_space = True
        elif name == "div" and not closing and BACK_MATTER_RE.search(attrs) and "sID=" in attrs:
            break
        elif name in BREAK_ELEMENTS:
            runs.append((" ", frozenset()))
        # Other inline elements (<q>, <seg>, <name>, ...) are dropped, keeping their text.

    words: list[str] = []
    numbers: list[frozenset[str]] = []
    word_parts: list[str] = []
    word_numbers: set[str] = set()
    for text, tag in runs + [(" ", frozenset())]:
        # The first piece continues the word in progress; each later piece starts a new word.
        for k, piece in enumerate(WHITESPACE_RE.split(text)):
            if k > 0 and word_parts:
                words.append("".join(word_parts))
                numbers.append(frozenset(word_numbers))
                word_parts, word_numbers = [], set()
            if piece:
                word_parts.append(piece)
                word_numbers |= tag
    return Verse(words, numbers)


def has_text(verse: Verse) -> bool:
    """A verse counts as empty unless some word contains a letter (bare punctuation is not text)."""
    return any(ch.isalpha() for word in verse.words for ch in word)


def strip_subscriptions(verses: dict[str, Verse]) -> int:
    """Cut the colophons Reina-Valera appends after the final "Amén." of an epistle.

    E.g. Romans 16:27 ends "... Amén. Fué escrita de Corinto á los Romanos, ...": they are
    not scripture and the WEB has no counterpart. Only the last verse of a book is touched.
    """
    last_of_book: dict[str, str] = {}
    for ref, verse in verses.items():
        if has_text(verse):
            last_of_book[REF_RE.match(ref).group(1)] = ref
    stripped = 0
    for ref in last_of_book.values():
        verse = verses[ref]
        amen = [i for i, word in enumerate(verse.words) if word == "Amén."]
        if amen and amen[-1] + 1 < len(verse.words):
            verses[ref] = Verse(verse.words[: amen[-1] + 1], verse.numbers[: amen[-1] + 1])
            stripped += 1
    return stripped


def absorbing_neighbours(verses: dict[str, Verse]) -> set[str]:
    """Verses that probably absorbed the text of an empty neighbour.

    When a translation merges verses N..M it puts the text in one of them and leaves the
    others empty, so the nearest non-empty verse of the same chapter is not a clean pair.
    We look backwards first; a chapter-initial empty verse is attributed to the next one.
    """
    refs = list(verses)
    chapter = [REF_RE.match(ref).group(1, 2) for ref in refs]
    empty = [not has_text(verses[ref]) for ref in refs]
    absorbing: set[str] = set()
    for k in range(len(refs)):
        if not empty[k]:
            continue
        for step in (-1, 1):
            i = k + step
            while 0 <= i < len(refs) and empty[i] and chapter[i] == chapter[k]:
                i += step
            if 0 <= i < len(refs) and chapter[i] == chapter[k]:
                absorbing.add(refs[i])
                break
    return absorbing


def agreement(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap of two verses' Strong's numbers (about 0.75 for a matching pair)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def nearby(refs: list[str], k: int) -> list[str]:
    return [refs[i] for i in range(max(0, k - NEARBY), min(len(refs), k + NEARBY + 1)) if i != k]


def tags_disagree(en: dict[str, Verse], es: dict[str, Verse], refs: list[str]) -> set[str]:
    """Pairs whose Strong's numbers barely overlap, or overlap better with a nearby verse.

    Both modules tag words with the same Strong's numbers, so a good pair shares most of
    them. They do not when Reina-Valera divides verses differently, and also where the WEB's
    tags follow Hebrew verse numbers that differ from its English text (titled Psalms,
    Genesis 32, Exodus 22, ...): there the text pair may be fine but its word alignment is
    noise, so the pair is dropped too.
    """
    bad: set[str] = set()
    for k, ref in enumerate(refs):
        direct = agreement(en[ref].strongs, es[ref].strongs)
        best_nearby = max(
            max(agreement(en[ref].strongs, es[other].strongs), agreement(en[other].strongs, es[ref].strongs))
            for other in nearby(refs, k)
        )
        if direct < AGREEMENT_FLOOR or best_nearby > direct + AGREEMENT_MARGIN:
            bad.add(ref)
    return bad


def normalise(word: str) -> str:
    return NON_WORD_RE.sub("", word.lower())


def learn_lexicon(
    en: dict[str, Verse], es: dict[str, Verse], alignments: dict[str, list[list[int]]]
) -> dict[str, set[str]]:
    """English word -> Spanish words it is often linked to through Strong's numbers (Dice score)."""
    links: collections.Counter[tuple[str, str]] = collections.Counter()
    en_counts: collections.Counter[str] = collections.Counter()
    es_counts: collections.Counter[str] = collections.Counter()
    for ref, alignment in alignments.items():
        en_words = [normalise(w) for w in en[ref].words]
        es_words = [normalise(w) for w in es[ref].words]
        en_counts.update(set(en_words))
        es_counts.update(set(es_words))
        links.update({(en_words[i], es_words[j]) for i, j in alignment})
    lexicon: dict[str, set[str]] = collections.defaultdict(set)
    for (e, s), n in links.items():
        if n >= LEXICON_MIN_LINKS and 2 * n / (en_counts[e] + es_counts[s]) >= LEXICON_MIN_DICE:
            lexicon[e].add(s)
    return lexicon


def text_shifted(en: dict[str, Verse], es: dict[str, Verse], alignments: dict[str, list[list[int]]]) -> set[str]:
    """Runs of pairs whose English words are better translated by a nearby Spanish verse.

    Catches what tags_disagree cannot: where Reina-Valera follows the Hebrew verse division
    (its 1 Samuel 24:1 is the WEB's 23:29) and the WEB's tags follow it too, so the tags
    agree while the texts do not. Real shifts span many verses, so isolated hits (repetitive
    passages) are ignored.
    """
    refs = list(alignments)
    lexicon = learn_lexicon(en, es, alignments)
    translations = {ref: [lexicon[w] for w in {normalise(w) for w in en[ref].words} if w in lexicon] for ref in refs}
    spanish = {ref: {normalise(w) for w in es[ref].words} for ref in refs}

    def hits(en_ref: str, es_ref: str) -> int:
        return sum(not options.isdisjoint(spanish[es_ref]) for options in translations[en_ref])

    direct = {ref: hits(ref, ref) for ref in refs}
    flagged = []
    for k, ref in enumerate(refs):
        gain = max(
            max(hits(ref, other) - direct[ref], hits(other, ref) - direct[other]) for other in nearby(refs, k)
        )
        flagged.append(gain >= SHIFT_MIN_EXTRA_HITS)
    shifted: set[str] = set()
    start = 0
    for k in range(len(refs) + 1):
        if k == len(refs) or not flagged[k]:
            if k - start >= SHIFT_MIN_RUN:
                shifted.update(refs[start:k])
            start = k + 1
    return shifted


def length_mismatch(en: Verse, es: Verse) -> bool:
    """One side much longer than the other: a merged or extra sentence on one side."""
    ratio = len(es.text) / len(en.text)
    return not 1 / MAX_LENGTH_RATIO <= ratio <= MAX_LENGTH_RATIO


def align(en: Verse, es: Verse) -> list[list[int]]:
    """Link every English and Spanish word pair sharing a Strong's number, sorted."""
    by_number: dict[str, list[int]] = collections.defaultdict(list)
    for j, nums in enumerate(es.numbers):
        for n in nums:
            by_number[n].append(j)
    links = {(i, j) for i, nums in enumerate(en.numbers) for n in nums for j in by_number.get(n, ())}
    return [list(link) for link in sorted(links)]


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

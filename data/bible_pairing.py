"""Pair English and Spanish verses: Strong's-number word links and the checks that drop bad pairs.

A pair is linked word by word where both words carry a common Strong's number. Pairs whose
verse division or tagging differs between the translations are found by comparing each pair
with the pairings of nearby verses (tags_disagree, text_shifted).
"""

from __future__ import annotations

import collections
import re

from data.bible_verses import Verse

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
# Stripped by normalise(), so "tierra," and "Tierra" count as one word in the lexicon.
NON_WORD_RE = re.compile(r"[^\w]+")


def agreement(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap of two verses' Strong's numbers (about 0.75 for a matching pair)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def nearby(refs: list[str], k: int) -> list[str]:
    """The references up to NEARBY places before and after refs[k], without refs[k] itself."""
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

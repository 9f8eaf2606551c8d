"""Read the two SWORD Bibles: export each module with mod2imp and clean its OSIS markup into verses.

A cleaned verse keeps, for every word, the Strong's numbers of the <w> elements it is made
of; data/bible_pairing.py pairs the two translations' verses through those numbers.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

MODULES = {"en": "engWEB2015eb", "es": "spaRV1909eb"}
APT_HINT = "sudo apt-get install sword-text-web sword-text-sparv libsword-utils"

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

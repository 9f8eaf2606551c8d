"""How degenerate the generated text is: loops and length, measured rather than read.

A model early in training, or one decoded greedily past its competence, repeats itself ("y el
el el el ...") and runs to the length limit; BLEU falls but does not say why. Two numbers every
evaluation reports beside BLEU/ROUGE:

- `repeat_4gram`: the share of hypotheses (in %) in which some word 4-gram occurs 3 or more
  times. Natural text almost never does this in a sentence; a looping decoder nearly always does.
- `len_ratio`: total hypothesis length over total reference length, in sacreBLEU's 13a tokens
  (BLEU's brevity penalty is computed from it). Loops push it above 1, truncation below.
"""

from __future__ import annotations

from collections import Counter

import sacrebleu

LOOP_N = 4  # the n-gram order that counts as a loop
LOOP_TIMES = 3  # occurrences of one n-gram in one hypothesis that make it a loop


def has_loop(text: str, n: int = LOOP_N, times: int = LOOP_TIMES) -> bool:
    """True when some word n-gram occurs at least `times` times in `text`."""
    words = text.split()
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(count >= times for count in grams.values())


def repeat_share(hypotheses: list[str], n: int = LOOP_N, times: int = LOOP_TIMES) -> float:
    """Percentage of hypotheses with a looping n-gram (0 for an empty list)."""
    if not hypotheses:
        return 0.0
    return 100.0 * sum(has_loop(h, n, times) for h in hypotheses) / len(hypotheses)


def length_ratio(hypotheses: list[str], references: list[str]) -> float:
    """sacreBLEU's hypothesis/reference length ratio (13a tokenization, corpus level)."""
    return sacrebleu.metrics.BLEU().corpus_score(hypotheses, [references]).ratio


def degeneracy_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    return {"repeat_4gram": round(repeat_share(hypotheses), 2),
            "len_ratio": round(length_ratio(hypotheses, references), 3)}

"""Text-generation scores computed the standard way: sacreBLEU, chrF, ROUGE (rouge-score).

Summarization is scored as the CNN/DailyMail and XSum papers report it: ROUGE-Lsum, the
summary-level LCS over sentences, with each text's sentences on their own lines. rouge-score
only splits on newlines (its `split_summaries` needs nltk's punkt data, which is a separate
download), so sentences are split here by `split_sentences`, a small deterministic splitter.
ROUGE-1/2/L are unaffected by the newlines and reported beside it.
"""

from __future__ import annotations

import re

import sacrebleu

from train.evals.degeneracy import degeneracy_scores

# Words whose trailing period does not end a sentence, as written (case matters: "sat." ends
# one, "Sat." may not): titles, company words, months, weekdays, dotted abbreviations.
ABBREVIATIONS = frozenset("""
    Mr Mrs Ms Dr Prof Sr Jr St Mt Ft Gen Col Lt Sgt Capt Cmdr Adm Gov Sen Rep Rev Fr Hon Pres Det
    Inc Ltd Co Corp Bros Dept Univ Assn Fig Vol vs etc al approx
    Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Mon Tue Tues Wed Thu Thur Thurs Fri
    e.g i.e a.m p.m U.S U.K U.N U.S.A D.C
""".split())
# A sentence ends at . ! or ? (possibly repeated, possibly followed by closing quotes or
# brackets), then whitespace, then what may open a sentence: a capital, a digit or an opening quote.
_BOUNDARY = re.compile(r"""([.!?]+)(['"\u2019\u201d)\]]*)\s+(?=['"\u2018\u201c(\[]?[A-Z0-9\u00c0-\u00de])""")
_LAST_WORD = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: its lines, each cut after sentence-final punctuation.

    A period ends a sentence unless the word before it is a listed abbreviation (Mr., U.S.,
    Jan., ...) or a single letter (an initial, as in "J. K. Rowling"). Tokenized text (" . ")
    is handled the same way. Deterministic and without data files; what it gets wrong (an
    abbreviation that really ends a sentence) costs ROUGE-Lsum little, on both sides alike.
    """
    out = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            if m.group(1) == ".":
                before = _LAST_WORD.search(line[start:m.start()])
                word = before.group(1).lstrip("'\"([") if before else ""
                if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
            out.append(line[start:m.end(2)].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if s]


def translation_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (13a tokenization, as reported in the literature) and chrF, with signatures."""
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def tutorial_bleu(hypotheses: list[str], references: list[str]) -> dict:
    """BLEU as tutorials and older papers report it: lowercased, on tokenized text.

    Tutorials (torchtext's bleu_score on spaCy tokens) and fairseq's IWSLT14 recipe lowercase
    and tokenize before scoring, which splits hyphens and punctuation off words; sacreBLEU's
    `intl` tokenizer does the same on detokenized text. Not comparable with `bleu`.
    """
    bleu = sacrebleu.metrics.BLEU(lowercase=True, tokenize="intl")
    return {"bleu_lc_tok": round(bleu.corpus_score(hypotheses, [references]).score, 2),
            "bleu_lc_tok_signature": str(bleu.get_signature())}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def summarization_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L/Lsum F1 with Porter stemming (rouge-score, as in See et al. and BART),
    each text's sentences on their own lines (what ROUGE-Lsum reads)."""
    from rouge_score import (
        rouge_scorer,  # imported here: it pulls in nltk, seconds of start-up
    )

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(hyp)))
        for name, score in scores.items():
            totals[name] += score.fmeasure
    n = max(len(hypotheses), 1)
    return {name: round(100.0 * total / n, 2) for name, total in totals.items()}


def generation_scores(task: str, hypotheses: list[str], references: list[str]) -> dict:
    """The task's scores (BLEU and chrF, or ROUGE) and how degenerate the text is (loops, length)."""
    if task == "summarization":
        scores = summarization_scores(hypotheses, references)
    else:
        scores = translation_scores(hypotheses, references)
    return {**scores, **degeneracy_scores(hypotheses, references)}


def primary_metric(task: str) -> str:
    """The validation metric that picks the best checkpoint (higher is better)."""
    return "rougeLsum" if task == "summarization" else "bleu"

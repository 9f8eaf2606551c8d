"""Text-generation scores computed the standard way: sacreBLEU, chrF, ROUGE (rouge-score)."""

from __future__ import annotations

import sacrebleu


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


def summarization_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L F1 with Porter stemming (rouge-score, as in See et al. and BART)."""
    from rouge_score import (
        rouge_scorer,  # imported here: it pulls in nltk, seconds of start-up
    )

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references):
        for name, score in scorer.score(ref, hyp).items():
            totals[name] += score.fmeasure
    n = max(len(hypotheses), 1)
    return {name: round(100.0 * total / n, 2) for name, total in totals.items()}


def generation_scores(task: str, hypotheses: list[str], references: list[str]) -> dict:
    if task == "summarization":
        return summarization_scores(hypotheses, references)
    return translation_scores(hypotheses, references)


def primary_metric(task: str) -> str:
    """The validation metric that picks the best checkpoint (higher is better)."""
    return "rougeL" if task == "summarization" else "bleu"

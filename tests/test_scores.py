"""train/evals/scores.py: the sentence splitter ROUGE-Lsum reads, ROUGE-Lsum itself, and the
tutorials' lowercased tokenized BLEU beside sacreBLEU."""

from __future__ import annotations

import pytest

from train.evals.scores import (
    generation_scores,
    primary_metric,
    split_sentences,
    summarization_scores,
    translation_scores,
    tutorial_bleu,
)


@pytest.mark.parametrize("text, sentences", [
    ("The cat sat. The dog ran!  Did it? Yes.", ["The cat sat.", "The dog ran!", "Did it?", "Yes."]),
    ("Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5 in the U.S. Capitol. Then he left.",
     ["Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5 in the U.S. Capitol.", "Then he left."]),
    ("J. K. Rowling wrote it. It sold 5.5 million copies. 2024 was a good year.",
     ["J. K. Rowling wrote it.", "It sold 5.5 million copies.", "2024 was a good year."]),
    ('He said "Stop." Then he left. (It was late.) "Why?" she asked.',
     ['He said "Stop."', "Then he left.", "(It was late.)", '"Why?" she asked.']),
    ("first highlight .\nsecond highlight . And more", ["first highlight .", "second highlight .", "And more"]),
    ("no capital after this. so no split", ["no capital after this. so no split"]),
    ("Wait... What happened?!", ["Wait...", "What happened?!"]),
    ("", []),
    ("  \n \n", []),
])
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_rouge_lsum_scores_sentences_not_one_sequence() -> None:
    """Two sentences in swapped order: one LCS over the whole text finds only one of them;
    the summary-level LCS of ROUGE-Lsum matches both."""
    ref, hyp = "The cat sat on the mat. The dog ran in the park.", "The dog ran in the park. The cat sat on the mat."
    scores = summarization_scores([hyp], [ref])
    assert set(scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert scores["rougeLsum"] == 100.0 and scores["rouge1"] == 100.0
    assert scores["rougeL"] < 60.0


def test_rouge_lsum_matches_rouge_score_on_newline_split_text() -> None:
    from rouge_score import rouge_scorer

    ref = "Storm hits the city. Schools are closed on Monday."
    hyp = "Schools closed Monday after a storm. The city was hit."
    expected = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True).score(
        "Storm hits the city.\nSchools are closed on Monday.",
        "Schools closed Monday after a storm.\nThe city was hit.")
    assert summarization_scores([hyp], [ref])["rougeLsum"] == round(100 * expected["rougeLsum"].fmeasure, 2)


def test_primary_metrics() -> None:
    assert primary_metric("summarization") == "rougeLsum"
    assert primary_metric("translation") == "bleu"
    assert "rougeLsum" in generation_scores("summarization", ["a b."], ["a b."])


def test_tutorial_bleu_is_lowercased_and_tokenized_beside_sacrebleu() -> None:
    refs = ["A man in a blue T-shirt is sitting on a bench.", "Two dogs are playing in the snow."]
    hyps = ["a man in a blue t-shirt sits on a bench .", "two dogs play in the snow ."]
    lc = tutorial_bleu(hyps, refs)
    standard = translation_scores(hyps, refs)
    assert lc["bleu_lc_tok"] > standard["bleu"] + 10  # case and tokenization no longer count
    assert "case:lc" in lc["bleu_lc_tok_signature"] and "tok:intl" in lc["bleu_lc_tok_signature"]
    assert standard["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert tutorial_bleu(refs, refs)["bleu_lc_tok"] == 100.0


def test_degenerate_output_is_measured():
    from train.evals.degeneracy import degeneracy_scores, has_loop, repeat_share

    assert has_loop("y el el el el el el")  # the 4-gram "el el el el" occurs 3 times
    assert has_loop("he aquí que yo he aquí que yo he aquí que yo")
    assert not has_loop("he aquí que yo he aquí que yo")  # twice is not a loop
    assert not has_loop("y dijo dios: sea la luz; y fué la luz")
    assert repeat_share(["a b c d a b c d a b c d", "a b c d e"]) == 50.0 and repeat_share([]) == 0.0
    scores = degeneracy_scores(["el el el el el el el el", "la casa"], ["el hombre", "la casa"])
    assert scores == {"repeat_4gram": 50.0, "len_ratio": 2.5}  # 10 hypothesis tokens for 4
    assert set(generation_scores("translation", ["a b"], ["a b"])) >= {"bleu", "repeat_4gram", "len_ratio"}

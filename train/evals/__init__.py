"""Evaluators: what validation runs, behind one protocol (base.py).

    base.py               the Evaluator protocol and the selection key
    validation_loss.py    teacher-forced loss, perplexity, accuracy over a split
    generation.py         decoding a split (KV-cached) and scoring it; Generator is shared with
                          the evaluate, translate and heads commands
    scores.py             sacreBLEU, chrF, ROUGE
    alignment.py          cross-attention heads' word alignment against gold links
    attention_forward.py  the one jitted attention-map forward shared by the probe and alignment
    probe.py              attention maps and per-head statistics of fixed pairs, drawn and logged

May import model/, data/, train.config, train.engine.step and train.analysis; never a command.
"""

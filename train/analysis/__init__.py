"""Analyses of attention and heads: pure numpy (and jitted gradient functions), no I/O besides
figures.

    attention_stats.py  per-head statistics of attention maps (entropy, distance, sink mass, ...)
    alignment.py        word alignments read off attention, scored against gold links
    head_importance.py  gate-gradient head importance (Michel et al. 2019) and pruning orders
    head_selection.py   which heads a pruned model keeps (by gates, importance or at random)
    head_roles.py       head roles read off attention maps (Voita et al. 2019): positional,
                        rare-token, sink, alignment
    heads_summary.py    the Markdown summary of `python -m train.heads`
    attention_plots.py head_plots.py   the figures

May import model/ and data/ (config constants and Batch); never train/engine or a command.
"""

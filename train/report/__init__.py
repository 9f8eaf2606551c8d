"""The sweep report: `python -m train.report DIR` (see __main__.py) compares the runs of a sweep.

    sweep.py   the runs of a sweep directory, the swept keys and the grid points never started
    runs.py    one run directory: its config, overrides, metrics, summary and status
    values.py  swept values and metrics as numbers: parsing, sorting, mean and spread
    table.py   one row per run, the Markdown table and the CSV
    plots.py   the figures, each with a text version for the Markdown
    statistics.py  intervals over seeds and the paired bootstrap test (sacreBLEU's statistics)
    seeds.py   a seed sweep read as points: per-point intervals and each point tested against a baseline
    page.py    report.html, the report as one self-contained page
    build.py   the report files (report.md, report.csv, report.html, the figures) from a sweep directory
    compare.py several sweeps' points on one table and plot (`python -m train.report.compare A B`)

It reads files only: it may import numpy, scipy, sacrebleu, omegaconf, matplotlib (plots.py, lazily) and
train.sweep.callbacks / train.evals.scores / model.config (constants only) for file names, the
task's metric and the attention types; never JAX, Flax or the model code.
"""

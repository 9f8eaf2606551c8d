"""`python -m train.report MULTIRUN_DIR`: compare the runs of a sweep in one table and a few plots.

    python -m train.report multirun/2026-01-01_12-00-00_head_sweep

Every folder under MULTIRUN_DIR holding `.hydra/config.yaml` is a run. The swept keys come from
the sweep record the sweep callback leaves (`sweep.json`, train/sweep/callbacks.py), else Hydra's
`multirun.yaml`, plus any override whose value differs between runs (Optuna trials). Written
under MULTIRUN_DIR/report/:

  report.md                 the table (also printed), then text versions of every plot
  report.csv                the table at full precision, one row per run
  report.html               the same report as one self-contained page, linking each run's explorer
  points.csv                with `seed` swept: per point, every metric's mean, sd and 95% interval
  metric_vs_<key>.png       final validation loss / metric and test metric against each swept key
                            (mean and 95% confidence interval over seeds when `seed` is swept)
  val_curves.png            validation loss and metric against step, all runs overlaid
  attention_entropy.png     per-layer attention entropy (nats, mean over heads, at the last
                            probe) against the head count, one panel per attention type

Runs that have a head analysis (`python -m train.heads run_dir=RUN`, heads/heads.json) add two
columns: `prunable heads`, the share of heads that can be switched off for less than 1 point of
the metric lost, and `best align F1`, the best cross-attention head's word-alignment F1.

With `seed` swept, the report also averages each point (the other swept values) over its seeds:
mean, standard deviation and the 95% confidence interval of the mean (Student's t), and tests
each point's test BLEU against a baseline point (--baseline; default the first) by paired
bootstrap resampling of the test sentences, with a sentence per comparison such as
"model.num_heads=8 vs model.num_heads=1: +1.90 BLEU (95% CI +0.80 to +3.00), p = 0.010 over 3 seeds".

Failed runs (the job raised), unfinished runs (no summary: killed, preempted or still running)
and points of the grid that never started are rows of the table, with what they reached.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Optional

from train.report.build import build_report
from train.report.sweep import find_runs, sweep_record


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a sweep's folder (hydra.sweep.dir), or one run's")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: MULTIRUN_DIR/report)")
    parser.add_argument("--no-plots", action="store_true", help="only the table (faster)")
    parser.add_argument("--baseline", default=None,
                        help="the point the others are tested against, e.g. model.num_heads=1 (default: the first)")
    args = parser.parse_args(argv)
    root = args.multirun_dir
    if not root.is_dir():
        print(f"error: {root} is not a directory (give the folder a sweep wrote, hydra.sweep.dir)", file=sys.stderr)
        return 2
    if not find_runs(root) and not sweep_record(root)[1]:
        print(f"error: no runs under {root} (no */.hydra/config.yaml)", file=sys.stderr)
        return 2
    try:
        report = build_report(root, args.out, plots=not args.no_plots, baseline=args.baseline)
    except ValueError as e:  # a --baseline that matches no point
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = io.StringIO()
    out.write(report["markdown"])
    out.write("\nwritten: " + ", ".join(str(p) for p in report["files"]) + "\n")
    sys.stdout.write(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is a difference between two sweep points real? Intervals over seeds and paired bootstrap tests.

- `interval`: mean, sample standard deviation and a 95% confidence interval of the mean over
  seeds (Student's t with n - 1 degrees of freedom: with 3 seeds the half-width is 2.48 sd).
- `paired_bootstrap`: the paired bootstrap resampling test of Koehn (2004) for corpus BLEU (or
  chrF) between a system and a baseline decoded on the same test sentences. Each resample draws
  the test sentences with replacement, the same draw for both sides and for every seed; a
  resample's score is sacreBLEU's corpus score of the drawn sentences' sufficient statistics,
  averaged over the seeds each side has. The two-sided p-value is how often the resampled
  difference falls on the other side of zero (doubled, with the +1 correction).

Why not sacreBLEU's own `PairedTest`: its bootstrap p-value compares |resampled difference|,
centred on its mean, with the observed |difference|, so two identical systems come out at
p = 1 / (n + 1) (always "significant"); here identical systems give p = 1. The scores, the
sentence statistics and their aggregation are sacreBLEU's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345  # sacreBLEU's default seed for its own resampling


@dataclass(frozen=True)
class Interval:
    mean: float
    sd: float  # sample standard deviation (0 for one value)
    n: int
    low: float  # 95% confidence interval of the mean (equal to the mean for one value)
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean, sd and the t-interval of the mean of `values` (at least one finite value)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        raise ValueError("interval() needs at least one finite value")
    mean = float(arr.mean())
    if arr.size == 1:
        return Interval(mean, 0.0, 1, mean, mean)
    from scipy.stats import t  # scipy comes with jax

    sd = float(arr.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, df=arr.size - 1)) * sd / math.sqrt(arr.size)
    return Interval(mean, sd, int(arr.size), mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    difference: float  # mean over seeds of score(system) - score(baseline), on the whole test set
    low: float  # 95% bootstrap interval of that difference
    high: float
    p_value: float  # two-sided, paired bootstrap
    seeds: int  # seeds per side (the system's and the baseline's runs)
    samples: int
    sentences: int


def _metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU()
    if name == "chrf":
        return CHRF()
    raise ValueError(f"paired bootstrap supports bleu and chrf, not {name!r}")


def _sentence_stats(metric, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """[sentences, stats] sufficient statistics, the ones sacreBLEU's corpus score sums."""
    return np.asarray(metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.float64)


def paired_bootstrap(system: Sequence[Sequence[str]], baseline: Sequence[Sequence[str]],
                     references: Sequence[str], metric: str = "bleu", samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> Comparison:
    """Paired bootstrap of corpus `metric` between `system` and `baseline`.

    system, baseline: one list of hypotheses per seed (any number of seeds on each side), each
    aligned with `references`.
    """
    runs = [*system, *baseline]
    if not system or not baseline:
        raise ValueError("paired_bootstrap needs at least one run on each side")
    n = len(references)
    bad = [len(h) for h in runs if len(h) != n]
    if n == 0 or bad:
        raise ValueError(f"every run needs one hypothesis per reference ({n}); got lengths {bad}")
    scorer = _metric(metric)
    stats = [[_sentence_stats(scorer, h, references) for h in side] for side in (system, baseline)]

    def score(side: list[np.ndarray], rows: Optional[np.ndarray]) -> float:
        sums = [(s if rows is None else s[rows]).sum(axis=0) for s in side]
        return float(np.mean([scorer._compute_score_from_stats(list(x)).score for x in sums]))

    observed = score(stats[0], None) - score(stats[1], None)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(samples, n))
    diffs = np.array([score(stats[0], rows) - score(stats[1], rows) for rows in draws])
    # How often chance puts the difference at zero or beyond it, on either side.
    below = (np.sum(diffs <= 0) + 1) / (samples + 1)
    above = (np.sum(diffs >= 0) + 1) / (samples + 1)
    p = min(1.0, 2 * min(below, above))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Comparison(observed, float(low), float(high), float(p), min(len(system), len(baseline)),
                      samples, n)


def describe(system: str, baseline: str, metric: str, comparison: Comparison) -> str:
    """"8 heads vs 1 head: +1.90 BLEU (95% CI +0.80 to +3.00), p = 0.010 over 3 seeds"."""
    c, name = comparison, {"bleu": "BLEU", "chrf": "chrF"}.get(metric, metric)
    floor = 2 / (c.samples + 1)  # the smallest p the resamples can show
    p = f"p ≤ {floor:.3f}" if c.p_value <= floor else f"p = {c.p_value:.3f}"
    seeds = f"{c.seeds} seed{'s' if c.seeds != 1 else ''}"
    verdict = "significant at 0.05" if c.p_value < 0.05 else "not significant at 0.05"
    return (f"{system} vs {baseline}: {c.difference:+.2f} {name} (95% CI {c.low:+.2f} to {c.high:+.2f}), "
            f"{p} over {seeds} ({verdict})")

"""The log-point hook: read the step's on-device metric sums, log them, move the progress bar.

The train step accumulates sums on the device (train/engine/step.py); this hook is the only
place that fetches them, every `train.log_every` steps and at the last step, so the host waits
for the device only there. Time spent outside training steps (compiling the first step,
validations) is excluded from the measured rate.

A model with Hard Concrete head gates also logs, at each log point, the expected number of open
heads per attention type and layer (`gates/{type}/layer{l}/open`, model/gate_params.py), read from
the current parameters: the gates' log_alphas are a few numbers, fetched only here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from flax import nnx

from model.gate_params import gate_metrics, log_alphas
from train.engine.progress import Progress, now
from train.engine.sharding import put_global, to_host
from train.engine.step import zero_metrics

LOSS_KEYS = ("train/loss", "train/nll", "train/ppl", "train/accuracy", "train/grad_norm")


def summarize(m: dict[str, float], elapsed_s: float, lr: float) -> dict[str, float]:
    """Log values from one interval's sums (see train/engine/step.py's METRIC_KEYS)."""
    tokens, steps = max(m["tokens"], 1.0), max(m["steps"], 1.0)
    out = {
        "train/loss": m["loss_sum"] / tokens,
        "train/nll": m["nll_sum"] / tokens,
        "train/ppl": float(np.exp(min(m["nll_sum"] / tokens, 50.0))),
        "train/accuracy": m["correct_sum"] / tokens,
        "train/grad_norm": m["grad_norm_sum"] / steps,
        "train/lr": lr,
        "train/tokens_per_s": (m["tokens"] + m["src_tokens"]) / max(elapsed_s, 1e-9),
        "train/nonfinite_steps": m["nonfinite"],
    }
    if m["steps"] == 0:  # every update of the interval was skipped as non-finite: no loss to report
        out.update({k: float("nan") for k in LOSS_KEYS})
    return {k: float(v) for k, v in out.items()}


class MetricsLog:
    """Hook (every log_every steps, and the last): fetch, reset, log, report progress."""

    def __init__(self, trainer: Any, progress: Progress, check_nonfinite: Callable[[dict], None]):
        self.trainer, self.progress, self.check_nonfinite = trainer, progress, check_nonfinite
        self.throughput: list[float] = []  # tokens/s of every interval after the first
        self.interval_start, self.interval_step, self.excluded_s = now(), trainer.start_step, 0.0

    def restart(self, step: Optional[int] = None) -> None:
        """Start the current interval now (after `step` when given)."""
        self.interval_start, self.excluded_s = now(), 0.0
        if step is not None:
            self.interval_step = step

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (a validation, compiling) out of the current interval's rate."""
        self.excluded_s += seconds

    def __call__(self, step: int) -> None:
        t = self.trainer
        m = to_host(t.state.metrics)  # waits for the steps dispatched so far
        elapsed = now() - self.interval_start - self.excluded_s
        t.state = t.state.replace(metrics=put_global(zero_metrics(), t.replicated))
        logs = summarize(m, elapsed, float(t.schedule(int(t.state.step))))
        logs.update(self.gate_logs())
        if step > t.start_step + t.cfg.train.log_every:  # the first interval includes warming up
            self.throughput.append(logs["train/tokens_per_s"])
        t.loggers.scalars(step, logs)
        self.progress.log_point(step, step - self.interval_step, elapsed, logs["train/loss"],
                                logs["train/tokens_per_s"])
        self.check_nonfinite(logs)
        self.restart(step)

    def gate_logs(self) -> dict[str, float]:
        """Expected open heads per layer and type, and the L0 penalty, for a gated model; else {}."""
        t = self.trainer
        if t.cfg.model.head_gates == "none":
            return {}
        logs = gate_metrics(to_host(log_alphas(nnx.merge(t.graphdef, t.state.params))))
        if t.cfg.train.gate_l0 and "gates/open" in logs:
            logs["train/gate_l0_penalty"] = t.cfg.train.gate_l0 * logs["gates/open"]
        return logs

    def median_tokens_per_s(self) -> float | None:
        return float(np.median(self.throughput)) if self.throughput else None

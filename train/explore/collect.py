"""Everything the page shows, read from a run directory or a sweep directory.

A run directory holds attention/step_N/ (the probes) and usually .hydra/config.yaml; a sweep
directory holds one such folder per job. The runs of a sweep, their order and the keys it swept
come from train/report/sweep.py (the sweep report's own reading of a sweep); each run adds its
probes (probes.py), its validation figures at the probe steps (metrics.jsonl) and, when
`python -m train.heads run_dir=RUN` has been run, head importance, pruning rank and alignment F1
(heads/heads.json). A page over its size budget (max_mb, 10 MB) embeds the maps of fewer steps,
spread evenly over training, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from model.config import ATTENTION_TYPES
from train.analysis.attention_stats import STATS
from train.errors import RunError
from train.explore.probes import LEVELS, Probes, has_probes, load_probes
from train.report.runs import Run, read_json, read_metrics
from train.report.sweep import find_runs, sort_runs, sweep_record, swept_keys

MAKE_PROBES = ("python -m train ... train.probe_examples=4 (any train.probe_examples > 0; "
               "it is the default)")
MAX_MB = 10.0  # the page's size budget; past it, maps are kept for fewer steps (fit_budget)
PAGE_OVERHEAD = 100_000  # bytes of scripts, styles and markup around the data
METRICS = ("val/loss", "val/bleu", "val/rouge_l", "val/accuracy")  # shown next to the step when logged


def layer_counts(run: Run) -> Optional[dict[str, int]]:
    """Layers per attention type from the run's config, or None when it has no usable config."""
    model = run.config.get("model") if isinstance(run.config, dict) else None
    if not isinstance(model, dict):
        return None
    both = model.get("num_layers")
    enc = both if both is not None else model.get("num_encoder_layers")
    dec = both if both is not None else model.get("num_decoder_layers")
    if not isinstance(enc, int) or not isinstance(dec, int):
        return None
    return {"encoder_self": enc, "decoder_self": dec, "cross": dec}


def step_metrics(metrics: list[dict], steps: list[int]) -> dict[str, list]:
    """{metric: [value at each probe step or None]} for the validation figures the run logged."""
    by_step: dict[int, dict] = {}
    for row in metrics:
        by_step.setdefault(int(row["step"]), {}).update(row)
    out = {}
    for name in METRICS:
        values = [by_step.get(s, {}).get(name) for s in steps]
        if any(isinstance(v, (int, float)) for v in values):
            out[name] = [float(f"{v:.4g}") if isinstance(v, (int, float)) else None for v in values]
    return out


def head_results(heads: Optional[dict]) -> Optional[dict]:
    """Importance, pruning rank, alignment F1, roles and gate P(open) per head from heads.json, or None."""
    if not isinstance(heads, dict) or not isinstance(heads.get("importance"), dict):
        return None
    imp = {k: v for k, v in heads["importance"].items() if k in ATTENTION_TYPES and isinstance(v, dict)}
    out: dict[str, Any] = {"step": heads.get("step"), "split": heads.get("split"),
                           "importance": {k: v.get("normalized") for k, v in imp.items()},
                           "rank": {k: v.get("pruning_rank") for k, v in imp.items()},
                           "heads_total": (heads.get("model") or {}).get("heads_total"), "f1": None}
    try:
        out["f1"] = heads["alignment"]["output_rows"]["heads"]["f1"]
    except (KeyError, TypeError):
        pass  # no gold alignments for this corpus
    out["roles"] = role_labels(heads.get("roles"))
    gates = heads.get("gates")
    out["gate"] = gates.get("open_probability") if isinstance(gates, dict) else None
    return out


ROLE_BADGES = {"positional": "pos", "rare_token": "rare", "sink": "sink", "alignment": "align"}


def role_labels(roles: Optional[dict]) -> Optional[dict]:
    """{type: [layer][head] -> short role labels ("pos -1", "rare", ...)} from heads.json's roles."""
    if not isinstance(roles, dict):
        return None
    out = {}
    for kind in ATTENTION_TYPES:
        layers = roles.get(kind)
        if not isinstance(layers, list):
            continue
        out[kind] = [[[ROLE_BADGES.get(r, r) + (f" {h['positional_offset']:+d}" if r == "positional" and
                                                isinstance(h.get("positional_offset"), int) else "")
                       for r in h.get("roles", [])] for h in layer] for layer in layers]
    return out


def run_title(run: Run, keys: list[str]) -> str:
    return ", ".join(f"{k}={run.value(k)}" for k in keys) if keys else run.name


def run_entry(run: Run, probes: Probes, keys: list[str]) -> dict:
    """The page's data for one run."""
    model = run.config.get("model") if isinstance(run.config.get("model"), dict) else {}
    return {"name": run.name, "title": run_title(run, keys), "status": run.status,
            "values": {k: run.value(k) for k in keys},
            "model": {k: model.get(k) for k in ("d_model", "num_heads", "head_dim") if k in model},
            **probes.to_json(), "metrics": step_metrics(run.metrics, probes.steps),
            "heads": head_results(run.heads)}


def fit_budget(loaded: list[tuple[Run, Probes]], max_mb: float) -> list[str]:
    """Thin the steps whose maps the page embeds so that it stays under max_mb; the notes why.

    Each run keeps a share of the budget in proportion to what it would need, as evenly spaced
    steps (first and last included); the statistics keep every step.
    """
    fixed = PAGE_OVERHEAD + sum(len(json.dumps(p.types, separators=(",", ":"))) for _, p in loaded)
    budget = (max_mb * 1e6 - fixed) * 3 / 4  # base64: 4 characters for 3 bytes
    need = sum(p.step_bytes() * len(p.steps) for _, p in loaded)
    if need <= budget:
        return []
    notes = []
    for run, p in loaded:
        share = max(budget, 0) * p.step_bytes() * len(p.steps) / need
        p.keep_maps(int(share // max(p.step_bytes(), 1)))
        notes.append(f"{run.name}: attention maps of {len(p.map_steps)} of {len(p.steps)} probe steps (evenly "
                     f"spaced) to keep the page under {max_mb:g} MB; the statistics cover every step "
                     "(raise the limit with max_mb=...)")
    return notes


def bare_run(path: Path) -> Run:
    """A folder with probes but no Hydra config (copied or hand-made): a run named after itself."""
    return Run(name=path.name, path=path, overrides={}, heads=read_json(path / "heads" / "heads.json"),
               metrics=read_metrics(path / "metrics.jsonl"))


def collect(root: Path, max_mb: float = MAX_MB) -> dict:
    """The page's data: {"title", "swept", "runs", "stats", "levels", "max_mb", "warnings", "raw_bytes"}.

    Raises RunError for a folder that is not there or holds no usable probe.
    """
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root} is not a directory: give a run directory written by `python -m train` "
                       "(hydra.run.dir) or a sweep's folder (hydra.sweep.dir)")
    runs = find_runs(root)
    if not runs and has_probes(root):
        runs = [bare_run(root)]
    keys = swept_keys(runs, sweep_record(root)[0]) if len(runs) > 1 else []
    runs = sort_runs(runs, keys)
    loaded: list[tuple[Run, Probes]] = []
    warnings: list[str] = []
    for run in runs:
        if not has_probes(run.path):
            warnings.append(f"{run.name}: no attention probes ({run.status}), left out")
            continue
        try:
            probes = load_probes(run.path, layer_counts(run))
        except ValueError as e:
            warnings.append(f"{run.name}: left out, {e}")
            continue
        loaded.append((run, probes))
        warnings += [f"{run.name}: skipped {line}" for line in probes.skipped]
    warnings += fit_budget(loaded, max_mb)
    entries = [run_entry(run, probes, keys) for run, probes in loaded]
    if not entries:
        what = f"{len(runs)} run(s) under {root}" if runs else str(root)
        unread = [w for w in warnings if "left out," in w]  # probes there, but no step reads whole
        detail = ("; ".join(unread) + ". ") if unread else ""
        raise RunError(f"no attention probes in {what} (attention/step_N/*.npz). {detail}They are written "
                       f"during training: {MAKE_PROBES}; then run `python -m train.explore {root}`")
    title = root.resolve().name
    return {"title": title, "swept": keys, "runs": entries, "stats": list(STATS), "levels": LEVELS,
            "max_mb": max_mb, "warnings": warnings, "raw_bytes": sum(p.raw_bytes for _, p in loaded)}

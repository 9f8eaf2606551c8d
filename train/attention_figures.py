"""`python -m train.attention_figures run_dir=DIR [out=DIR/figures] [step=N] [example=0]`

Three pictures that explain what a trained run's heads do, drawn from the attention probes the
run saved while training (run_dir/attention/step_*/{type}_layer{l}.npz, train/evals/probe.py), so no
model is loaded and nothing is recomputed:

  cross_attention.png        the cross-attention head at `step` whose weights are both sharp
                             (high mean max-weight) and spread over different source tokens
                             (not a "sink" that sends every query to one key): each target
                             token's weights over the source, a soft word alignment
  positional_head.png        the encoder or decoder self-attention head that puts the most
                             weight on one fixed offset (the previous token, the next one,
                             itself): a head that encodes position rather than content
  entropy_over_training.png  every head's attention entropy (nats) at each probe step, one panel
                             per attention type, one colour per layer: heads sharpen as they learn
  figures.json               which layer/head each picture shows and the scores behind the choice

Arguments are Hydra overrides typed by FiguresArgs.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import MISSING

from model.config import ATTENTION_TYPES
from train.analysis.attention_plots import AXIS_NAMES
from train.cli import compose_args, run_command
from train.errors import RunError

USAGE = "usage: python -m train.attention_figures run_dir=DIR [out=DIR/figures] [step=N] [example=0]"
OFFSETS = tuple(range(-3, 4))  # key position minus query position, for positional heads


@dataclass
class FiguresArgs:
    run_dir: str = MISSING  # a run directory written by `python -m train` with train.probe_examples > 0
    out: Optional[str] = None  # where to write; None = run_dir/figures
    step: Optional[int] = None  # probe step to draw the maps from; None = the last one
    example: int = 0  # which probe pair the maps show


def register_args() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="attention_figures", node=FiguresArgs)


# ---- reading the probes ------------------------------------------------------------------------

def probe_steps(run_dir: Path) -> dict[int, Path]:
    """{step: run_dir/attention/step_N} for every probe the run saved, in step order."""
    found = {}
    for path in (run_dir / "attention").glob("step_*"):
        match = re.fullmatch(r"step_(\d+)", path.name)
        if match and any(path.glob("*.npz")):
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def load_layers(step_dir: Path, kind: str) -> list[dict[str, np.ndarray]]:
    """Every layer's probe of one attention type: [{weights (K, H, Tq, Tk) float32, tokens, valid}]."""
    layers = []
    while (path := step_dir / f"{kind}_layer{len(layers)}.npz").exists():
        with np.load(path) as npz:
            layer = {name: npz[name] for name in npz.files}
        layer["weights"] = layer["weights"].astype(np.float32)
        layers.append(layer)
    if not layers:
        raise RunError(f"{step_dir} has no {kind}_layer0.npz: the probe files are incomplete; "
                       "draw from another step (step=N) or re-run training with train.probe_examples > 0")
    return layers


# ---- choosing heads ------------------------------------------------------------------------------

def offset_mass(weights: np.ndarray, q_valid: np.ndarray, k_valid: np.ndarray) -> np.ndarray:
    """Mean weight on the key at each offset from the query, over valid query rows.

    weights (K, H, T, S), q_valid (K, T), k_valid (K, S) -> (H, len(OFFSETS)).
    """
    _, _, t, s = weights.shape
    out = np.zeros((weights.shape[1], len(OFFSETS)))
    rows = q_valid.astype(bool)
    for n, d in enumerate(OFFSETS):
        cols = np.arange(t) + d  # (T,) the key at offset d from each query
        inside = (cols >= 0) & (cols < s)
        picked = np.zeros(weights.shape[:3])  # (K, H, T)
        picked[:, :, inside] = weights[:, :, np.arange(t)[inside], cols[inside]]
        picked[:, :, inside] *= k_valid[:, cols[inside]][:, None, :]
        out[:, n] = (picked * rows[:, None]).sum((0, 2)) / max(rows.sum(), 1)
    return out


def sharpness(weights: np.ndarray, q_valid: np.ndarray) -> np.ndarray:
    """Mean over valid queries of each head's largest weight: (K, H, T, S), (K, T) -> (H,)."""
    rows = q_valid.astype(bool)
    return (weights.max(-1) * rows[:, None]).sum((0, 2)) / max(rows.sum(), 1)


def sink_share(weights: np.ndarray, q_valid: np.ndarray) -> np.ndarray:
    """How much of a head's weight goes to its single most-attended key, averaged over examples.

    A "sink" head sends every query to the same key (often EOS or one salient word): sharp, but
    not an alignment. (K, H, T, S), (K, T) -> (H,) in [0, 1].
    """
    rows = q_valid.astype(bool)[:, None, :, None]  # (K, 1, T, 1)
    column_mass = (weights * rows).sum(2) / np.maximum(rows.sum(2), 1)  # (K, H, S)
    return column_mass.max(-1).mean(0)


def alignment_score(weights: np.ndarray, q_valid: np.ndarray) -> np.ndarray:
    """Sharp and spread over different keys: sharpness x (1 - sink share). (H,)."""
    return sharpness(weights, q_valid) * (1.0 - sink_share(weights, q_valid))


def entropy_per_head(layer: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Attention entropy per head (nats, mean over valid queries of all probe pairs): (H,)."""
    from train.analysis.attention_stats import head_stats

    stats = head_stats(layer["weights"], layer["query_valid"], layer["key_valid"],
                       causal=kind == "decoder_self", cross=kind == "cross")
    return stats["entropy"]


# ---- drawing -------------------------------------------------------------------------------------

def _single_head(layer: dict[str, np.ndarray], head: int, example: int, title: str, axes: tuple[str, str]):
    from train.analysis.attention_plots import head_grid_figure

    if not 0 <= example < layer["weights"].shape[0]:
        raise RunError(f"example={example} is out of range: the probe holds {layer['weights'].shape[0]} pairs")
    tq, tk = int(layer["query_valid"][example].sum()), int(layer["key_valid"][example].sum())
    w = layer["weights"][example, head:head + 1, :tq, :tk]  # (1, Tq, Tk)
    fig = head_grid_figure(w, layer["query_tokens"][example, :tq], layer["key_tokens"][example, :tk], title, *axes)
    fig.axes[0].set_title(f"head {head}", fontsize=fig.axes[0].title.get_fontsize())  # not the panel index
    return fig


def entropy_figure(history: dict[str, dict[int, list[np.ndarray]]]):
    """history: {kind: {step: [per-layer (H,) entropy]}} -> one panel per attention type."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(ATTENTION_TYPES), sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:grey"]
    for ax, kind in zip(axes, ATTENTION_TYPES):
        steps = sorted(history[kind])
        per_step = np.stack([np.stack(history[kind][s]) for s in steps])  # (steps, L, H)
        for layer in range(per_step.shape[1]):
            for head in range(per_step.shape[2]):
                ax.plot(steps, per_step[:, layer, head], color=colours[layer % len(colours)], lw=1.2, alpha=0.8,
                        marker="o", ms=3, label=f"layer {layer}" if head == 0 else None)
        ax.set_title(kind.replace("_", " "), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("attention entropy (nats), one line per head")
    axes[-1].legend(fontsize=8)
    return fig


# ---- the command ---------------------------------------------------------------------------------

def make_figures(run_dir: Path, out_dir: Path, step: Optional[int] = None, example: int = 0) -> dict:
    """Write the three figures and figures.json; returns what figures.json holds."""
    from train.analysis.attention_plots import render

    if not run_dir.is_dir():
        raise RunError(f"run_dir={run_dir} is not a directory (give a folder written by `python -m train`)")
    steps = probe_steps(run_dir)
    if not steps:
        raise RunError(f"{run_dir}/attention holds no probes: train with train.probe_examples > 0 "
                       "(the default is 4), then run this command on that run")
    step = max(steps) if step is None else step
    if step not in steps:
        raise RunError(f"step={step} has no probe; probe steps of this run: {list(steps)}")

    cross = load_layers(steps[step], "cross")
    scores = np.stack([alignment_score(layer["weights"], layer["query_valid"]) for layer in cross])  # (L, H)
    sharp = np.stack([sharpness(layer["weights"], layer["query_valid"]) for layer in cross])
    sinks = np.stack([sink_share(layer["weights"], layer["query_valid"]) for layer in cross])
    c_layer, c_head = (int(i) for i in np.unravel_index(np.argmax(scores), scores.shape))
    # The most positional self-attention head, encoder or decoder (the decoder sees offsets <= 0 only).
    candidates = []
    for kind in ("encoder_self", "decoder_self"):
        layers = load_layers(steps[step], kind)
        masses = np.stack([offset_mass(layer["weights"], layer["query_valid"], layer["key_valid"])
                           for layer in layers])  # (L, H, offsets)
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(masses), masses.shape))
        candidates.append((float(masses[idx]), kind, masses, layers, idx))
    _, p_kind, masses, p_layers, (p_layer, p_head, p_off) = max(candidates, key=lambda c: c[0])
    offset = OFFSETS[p_off]

    out_dir.mkdir(parents=True, exist_ok=True)
    render(_single_head(cross[c_layer], c_head, example,
                        f"cross-attention, layer {c_layer} head {c_head}, step {step} "
                        f"(mean max weight {sharp[c_layer, c_head]:.2f})",
                        AXIS_NAMES["cross"]), out_dir / "cross_attention.png")
    where = {0: "itself", -1: "the previous token", 1: "the next token"}.get(offset, f"offset {offset:+d}")
    render(_single_head(p_layers[p_layer], p_head, example,
                        f"{p_kind.replace('_', ' ')}-attention, layer {p_layer} head {p_head}, step {step}: "
                        f"{masses[p_layer, p_head, p_off]:.0%} of the weight on {where}",
                        AXIS_NAMES[p_kind]), out_dir / "positional_head.png")
    history = {kind: {s: [entropy_per_head(layer, kind) for layer in load_layers(d, kind)] for s, d in steps.items()}
               for kind in ATTENTION_TYPES}
    render(entropy_figure(history), out_dir / "entropy_over_training.png")

    result = {
        "run_dir": str(run_dir), "step": step, "probe_steps": list(steps), "example": example,
        "cross_attention": {"layer": c_layer, "head": c_head, "mean_max_weight": float(sharp[c_layer, c_head]),
                            "sink_share": float(sinks[c_layer, c_head]),
                            "mean_max_weight_per_head": sharp.round(4).tolist(),
                            "sink_share_per_head": sinks.round(4).tolist()},
        "positional_head": {"attention": p_kind, "layer": p_layer, "head": p_head, "offset": offset,
                            "weight_on_offset": float(masses[p_layer, p_head, p_off]),
                            "offsets": list(OFFSETS), "weight_per_offset": masses[p_layer, p_head].round(4).tolist()},
        "entropy": {kind: {str(s): [e.round(4).tolist() for e in per_layer] for s, per_layer in h.items()}
                    for kind, h in history.items()},
    }
    (out_dir / "figures.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: Optional[list[str]] = None) -> None:
    register_args()
    args = compose_args("attention_figures", FiguresArgs, sys.argv[1:] if argv is None else argv, USAGE)
    run_dir = Path(args.run_dir)
    out_dir = Path(args.out) if args.out else run_dir / "figures"
    r = run_command(lambda a: make_figures(run_dir, out_dir, a.step, a.example), args)
    c, p = r["cross_attention"], r["positional_head"]
    print(f"step {r['step']}: alignment-like cross-attention head: layer {c['layer']} head {c['head']} "
          f"(mean max weight {c['mean_max_weight']:.2f}, sink share {c['sink_share']:.2f}); most positional "
          f"head: {p['attention']} layer {p['layer']} head {p['head']}, {p['weight_on_offset']:.0%} of its "
          f"weight at offset {p['offset']:+d}")
    print(f"wrote {out_dir}/: cross_attention.png, positional_head.png, entropy_over_training.png, figures.json",
          file=sys.stderr)


if __name__ == "__main__":
    main()

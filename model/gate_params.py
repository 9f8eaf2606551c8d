"""The Hard Concrete gates of a whole model (model/gates.py): their log_alphas by attention type
and layer, the differentiable L0 penalty the training step adds, and the host-side summaries that
training logs and the head tools report.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model import gates as hard_concrete
from model.attention_maps import attention_modules
from model.config import ATTENTION_TYPES


def log_alphas(model: nnx.Module) -> dict[str, list[Optional[jax.Array]]]:
    """{type: [log_alpha (H_l,) per layer, None for a layer without gates or heads]}."""
    return {kind: [m.gate_log_alpha[...] if m.gated else None for m in modules]
            for kind, modules in attention_modules(model).items()}


def has_gates(model: nnx.Module) -> bool:
    return any(a is not None for layers in log_alphas(model).values() for a in layers)


def expected_open_heads(model: nnx.Module) -> jax.Array:
    """sum over every gated head of P(z > 0): the expected L0 norm of all gates, () float32.
    Zero for a model without gates. Differentiable in the log_alphas (the penalty's gradient)."""
    total = jnp.zeros((), jnp.float32)
    for layers in log_alphas(model).values():
        for a in layers:
            if a is not None:
                total = total + jnp.sum(hard_concrete.expected_l0(a))
    return total


def gate_table(alphas: dict[str, list[Any]]) -> dict[str, list[Optional[dict[str, np.ndarray]]]]:
    """Host numpy per layer: {"log_alpha", "open_probability" (P(z > 0)), "eval_gate"} (H_l,)
    arrays, None for a layer without gates. `alphas` as log_alphas() returns, fetched to the host."""
    out = {}
    for kind in ATTENTION_TYPES:
        out[kind] = []
        for a in alphas.get(kind, []):
            if a is None:
                out[kind].append(None)
                continue
            a = np.asarray(a, np.float64)
            out[kind].append({"log_alpha": a, "open_probability": hard_concrete.expected_l0_np(a),
                              "eval_gate": hard_concrete.deterministic_np(a)})
    return out


def gate_metrics(alphas: dict[str, list[Any]]) -> dict[str, float]:
    """What training logs at log points: the expected number of open heads of each layer
    (`gates/{type}/layer{l}/open`, the sum of P(z > 0) over its heads), of each type
    (`gates/{type}/open`) and of the model (`gates/open`), and how many heads the deterministic
    evaluation gate keeps on (`gates/eval_open`: z > 0). Empty for a model without gates."""
    out: dict[str, float] = {}
    total, eval_open = 0.0, 0
    for kind, layers in gate_table(alphas).items():
        kind_total = 0.0
        for layer, row in enumerate(layers):
            if row is None:
                continue
            opened = float(row["open_probability"].sum())
            out[f"gates/{kind}/layer{layer}/open"] = opened
            kind_total += opened
            eval_open += int(np.sum(row["eval_gate"] > 0))
        if any(row is not None for row in layers):
            out[f"gates/{kind}/open"] = kind_total
            total += kind_total
    if out:
        out["gates/open"] = total
        out["gates/eval_open"] = float(eval_open)
    return out

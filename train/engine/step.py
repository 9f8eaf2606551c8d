"""The pure, jitted training and evaluation steps.

The model is split once into (graphdef, params); the steps merge it back inside the trace,
so no NNX graph traversal happens per step in Python. The train step donates its state,
derives dropout randomness from fold_in(base_key, step), accumulates metric sums on device
(the host reads them only every log_every steps), and skips updates whose loss or gradient
is not finite.

With Hard Concrete head gates (model.head_gates=concrete) the loss adds train.gate_l0 times the
expected number of open gates, sum_h P(z_h > 0) over every head of every attention (Voita et al.
2019 sum over heads rather than average, so their lambda values carry over); the gate noise comes
from the same per-step key as dropout (model/attention.py folds it in). The logged train/loss
stays the cross entropy; the gates are logged from the parameters at log points
(train/engine/train_metrics.py).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from data.batch import Batch
from model.gate_params import expected_open_heads
from train.engine.losses import smoothed_cross_entropy

METRIC_KEYS = (
    "loss_sum", "nll_sum", "correct_sum", "tokens", "src_tokens", "grad_norm_sum", "steps", "nonfinite",
)


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # () int32: optimizer updates applied so far (skipped updates count too)
    params: Any  # nnx.State of the model's parameters
    opt_state: Any
    metrics: dict  # on-device sums since the last log, see METRIC_KEYS
    nonfinite_in_row: jax.Array  # () int32
    last_nonfinite_step: jax.Array  # () int32, -1 if none


def zero_metrics() -> dict:
    return {k: jnp.zeros((), jnp.float32) for k in METRIC_KEYS}


def create_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        metrics=zero_metrics(),
        nonfinite_in_row=jnp.zeros((), jnp.int32),
        last_nonfinite_step=jnp.full((), -1, jnp.int32),
    )


def forward(model, batch: Batch, dropout_key: jax.Array | None):
    """Teacher-forced logits (B, T, V) for a packed batch."""
    return model(
        batch.src,
        batch.tgt_in,
        src_segments=batch.src_segments,
        tgt_segments=batch.tgt_segments,
        src_positions=batch.src_positions,
        tgt_positions=batch.tgt_positions,
        dropout_key=dropout_key,
    )


def make_train_step(
    graphdef: Any, tx: optax.GradientTransformation, label_smoothing: float, gate_l0: float = 0.0
) -> Callable[[TrainState, Batch, jax.Array], TrainState]:
    """Return the (unjitted) pure step: (state, batch, base_key) -> state.

    gate_l0: weight of the expected-L0 penalty on the model's head gates (0 = none)."""

    def loss_fn(params, batch, key):
        model = nnx.merge(graphdef, params)
        logits = forward(model, batch, key)  # (B, T, V) float32
        sums = smoothed_cross_entropy(logits, batch.tgt_out, batch.tgt_segments > 0, label_smoothing)
        loss = sums["loss_sum"] / jnp.maximum(sums["tokens"], 1.0)
        if gate_l0:
            loss = loss + gate_l0 * expected_open_heads(model)
        return loss, sums

    def train_step(state: TrainState, batch: Batch, base_key: jax.Array) -> TrainState:
        key = jax.random.fold_in(base_key, state.step)
        grads, sums = jax.grad(loss_fn, has_aux=True)(state.params, batch, key)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        # A non-finite step leaves parameters and optimizer state untouched.
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
        finite_f = finite.astype(jnp.float32)
        step_metrics = {
            "loss_sum": jnp.where(finite, sums["loss_sum"], 0.0),
            "nll_sum": jnp.where(finite, sums["nll_sum"], 0.0),
            "correct_sum": sums["correct_sum"] * finite_f,
            "tokens": sums["tokens"] * finite_f,
            "src_tokens": jnp.sum(batch.src_segments > 0).astype(jnp.float32) * finite_f,
            "grad_norm_sum": jnp.where(finite, grad_norm, 0.0),
            "steps": finite_f,
            "nonfinite": 1.0 - finite_f,
        }
        return TrainState(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            metrics={k: state.metrics[k] + step_metrics[k] for k in METRIC_KEYS},
            nonfinite_in_row=jnp.where(finite, 0, state.nonfinite_in_row + 1),
            last_nonfinite_step=jnp.where(finite, state.last_nonfinite_step, state.step),
        )

    return train_step


def make_eval_step(graphdef: Any) -> Callable[[Any, Batch], dict]:
    """(params, batch) -> sums of NLL, correct tokens and tokens, without dropout."""

    def eval_step(params, batch: Batch) -> dict:
        model = nnx.merge(graphdef, params)
        logits = forward(model, batch, None)
        return smoothed_cross_entropy(logits, batch.tgt_out, batch.tgt_segments > 0, 0.0)

    return eval_step

"""The optimizer: optax AdamW with a warmup/decay schedule, clipping and gradient accumulation."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from train.config import OptimConfig


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to cfg.lr, then the configured decay."""
    warmup = max(cfg.warmup_steps, 1)
    if cfg.schedule == "inverse_sqrt":
        # Vaswani et al.: lr * min(step / warmup, sqrt(warmup / step)).
        def schedule(step):
            step = jnp.maximum(step, 1).astype(jnp.float32)
            return cfg.lr * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))

        return schedule
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)], [warmup]
        )
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio
        )
    # linear
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.lr, warmup),
            optax.linear_schedule(cfg.lr, cfg.lr * cfg.min_lr_ratio, max(total_steps - warmup, 1)),
        ],
        [warmup],
    )


def _decay_mask(params):
    """Weight decay on matrices only: biases, LayerNorm scales and gates are left alone."""
    import jax

    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def _is_gate(params):
    """True at the Hard Concrete gates' log_alpha leaves (model/gates.py)."""
    import jax

    return jax.tree_util.tree_map_with_path(lambda path, _: "gate_log_alpha" in jax.tree_util.keystr(path), params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (decoupled weight decay), global-norm clipping first, optional accumulation.

    total_steps counts train steps (micro-batches). With optim.grad_accum = k, optax.MultiSteps
    applies one update every k steps and the inner optimizer's schedule advances once per update,
    so the schedule is laid out over total_steps // k updates (warmup_steps counts updates too).
    Returns (tx, lr_at_step): the learning rate the next update uses after `step` train steps,
    which is what `train/lr` logs.
    """
    k = cfg.grad_accum
    schedule = learning_rate_schedule(cfg, max(total_steps // k, 1))
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask)
    )
    if cfg.gate_lr_scale != 1.0:  # the gates' own rate (OptimConfig.gate_lr_scale); the rest is untouched
        parts.append(optax.masked(optax.scale(cfg.gate_lr_scale), _is_gate))
    tx = optax.chain(*parts)
    if k == 1:
        return tx, schedule
    return optax.MultiSteps(tx, every_k_schedule=k), lambda step: schedule(step // k)

"""Fault injection for the reliability tests (tests/test_faults.py, tests/test_resume.py).

Each fault is an environment variable read once at start-up. `install(trainer)` turns the ones
that are set into ordinary hooks (train/engine/hooks.py) and a wrapped step; unset (always,
outside tests) nothing is installed, so the production loop carries no test branch.

    ATTENTION_LAB_FAULT_NAN=K[:N],...  steps K..K+N-1 (1-based, as logged) get non-finite gradients
    ATTENTION_LAB_FAULT_KILL_AT_STEP=K SIGKILL this process after step K, once earlier saves are on disk
    ATTENTION_LAB_FAULT_KILL_IN_SAVE=K SIGKILL this process while the async save of step K is writing
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, Optional

ENV_NAN = "ATTENTION_LAB_FAULT_NAN"
ENV_KILL_AT_STEP = "ATTENTION_LAB_FAULT_KILL_AT_STEP"
ENV_KILL_IN_SAVE = "ATTENTION_LAB_FAULT_KILL_IN_SAVE"


def wrap_step(step_fn: Callable) -> Callable:
    """The pure train step, with the NaN fault wrapped around it when ATTENTION_LAB_FAULT_NAN is set."""
    steps = nan_steps()
    return with_injected_nan(step_fn, steps) if steps else step_fn


def install(trainer: Any) -> None:
    """Add the kill faults that are set as hooks of `trainer` (a train.engine.trainer.Trainer)."""
    at_step, in_save = kill_at_step(), kill_in_save()
    if at_step is not None:
        def kill_after_step(step: int) -> None:
            if step == at_step:  # a crash between saves
                trainer.checkpointer.wait()  # so that the test knows which checkpoints are complete
                kill_self(f"after step {step}")
        trainer.hooks.add(kill_after_step)
    if in_save is not None:
        def kill_while_saving(step: int) -> None:
            if step == in_save:  # the write is in flight on Orbax's thread
                saving = trainer.checkpointer.manager.is_saving_in_progress()
                kill_self(f"while saving step {step} (in progress: {saving})")
        trainer.hooks.on_save(kill_while_saving)


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def kill_at_step() -> Optional[int]:
    return _env_int(ENV_KILL_AT_STEP)


def kill_in_save() -> Optional[int]:
    return _env_int(ENV_KILL_IN_SAVE)


def kill_self(why: str) -> None:
    """SIGKILL: no handler, no cleanup, no flush of anything not yet on disk (a crash, an OOM kill)."""
    print(f"fault injection: SIGKILL {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def nan_steps() -> Optional[tuple[int, ...]]:
    """Steps (1-based, as logged) from ATTENTION_LAB_FAULT_NAN="K[:N][,K[:N]...]" (N steps from K)."""
    value = os.environ.get(ENV_NAN, "").strip()
    if not value:
        return None
    steps: list[int] = []
    for part in value.split(","):
        first, _, count = part.strip().partition(":")
        steps.extend(range(int(first), int(first) + int(count or 1)))
    return tuple(sorted(set(steps)))


def with_injected_nan(train_step: Callable, steps: tuple[int, ...]) -> Callable:
    """Wrap a pure train step so that the given steps see NaN parameters.

    The loss and every gradient are then non-finite, exactly as after an overflow, and the wrapped
    step's own guard decides what happens (skip the update, count it). The poisoned parameters are
    put back afterwards, so only the guard's decision is visible in the returned state.
    """
    import jax
    import jax.numpy as jnp

    bad_steps = jnp.asarray(steps, jnp.int32)

    def step(state: Any, batch: Any, base_key: jax.Array) -> Any:
        bad = jnp.any(state.step + 1 == bad_steps)  # state.step: updates so far, so this is step+1
        poison = lambda p: jnp.where(bad, jnp.nan, p) if jnp.issubdtype(p.dtype, jnp.floating) else p
        new = train_step(state.replace(params=jax.tree_util.tree_map(poison, state.params)), batch, base_key)
        params = jax.tree_util.tree_map(lambda n, o: jnp.where(bad, o, n), new.params, state.params)
        return new.replace(params=params)

    return step

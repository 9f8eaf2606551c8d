"""Compile time as JAX itself measures it, so the train and decode lines can report it apart
from the first call's run time."""

from __future__ import annotations

from typing import Any


class CompileTimer:
    """Sums JAX's own tracing/lowering/compiling durations (jax.monitoring events)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self) -> None:
        import jax.monitoring

        self.total, self.compiles = 0.0, 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_: Any) -> None:
        if event in self.EVENTS:
            self.total += duration
            self.compiles += event == "/jax/core/compile/backend_compile_duration"

    def reset(self) -> None:
        self.total, self.compiles = 0.0, 0

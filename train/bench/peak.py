"""The denominator of MFU: the best FLOP/s of a large matmul in the compute dtype, on the same
devices, in this process (so it drifts with the machine the way the train step does)."""

from __future__ import annotations

from typing import Callable

from train.bench.timing import best_seconds


def matmul_peak(mesh, dtype: str, n: int, reps: int = 5) -> tuple[Callable[[], float], str]:
    """A function that measures the best FLOP/s (over `reps` runs) of an (n, n) @ (n, n) matmul
    per device, on all devices of the mesh at once; and a label saying what it multiplies."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    k = mesh.size
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    dt = jnp.dtype(dtype)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a, b = (jax.device_put(jax.random.normal(key, (k, n, n), jnp.float32).astype(dt), sharding) for key in keys)
    f = jax.jit(lambda a, b: jnp.einsum("kij,kjl->kil", a, b, preferred_element_type=dt),
                out_shardings=sharding)
    f(a, b).block_until_ready()

    def measure() -> float:
        return 2.0 * k * n**3 / best_seconds(lambda: f(a, b).block_until_ready(), reps)

    return measure, f"{k}x({n}x{n})@({n}x{n}) {dtype}"

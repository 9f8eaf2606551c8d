"""The matmul floor (train/bench/dot_floor.py): every dot of a compiled step found with its
shapes and dimension numbers, timed alone, and reported against the profilers' wall time."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.conftest import run_cli
from train.bench.dot_floor import Dot, call_overhead, hlo_dots, time_alone


def test_hlo_dots_finds_each_dot_with_its_shapes_and_the_op_that_runs_it() -> None:
    """A dense layer with bias and ReLU (XLA fuses the dot with them) and a batched attention-like
    product: both dots come back with their operand shapes and dimension numbers, each under the
    name of a compiled op (the fusion that holds it, or the dot itself)."""

    def f(x, w, b, q, k):
        dense = jax.nn.relu(x @ w + b)  # (16, 48) @ (48, 24)
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k)  # (2, 3, 5, 8) x (2, 3, 7, 8)
        return dense, scores

    args = [jnp.ones(s) for s in ((16, 48), (48, 24), (24,), (2, 3, 5, 8), (2, 3, 7, 8))]
    compiled = jax.jit(f).lower(*args).compile().as_text()
    dots = hlo_dots(compiled)
    found = sorted((d for op_dots in dots.values() for d in op_dots), key=lambda d: len(d.lhs))
    assert len(found) == 2
    dense, scores = found
    assert (dense.lhs, dense.rhs, dense.lhs_contract, dense.rhs_contract) == ((16, 48), (48, 24), (1,), (0,))
    assert dense.flops == 2 * 16 * 48 * 24
    assert (scores.lhs_batch, scores.rhs_batch, scores.lhs_contract, scores.rhs_contract) == ((0, 1), (0, 1), (3,), (3,))
    assert scores.flops == 2 * 2 * 3 * 5 * 7 * 8
    for name in dots:  # each key is an op of the compiled module, as the trace names it
        assert f"%{name} = " in compiled


def test_time_alone_grows_with_the_dots_work() -> None:
    small = Dot(lhs=(64, 64), rhs=(64, 64), dtype="f32", out_dtype="f32", lhs_contract=(1,), rhs_contract=(0,))
    large = Dot(lhs=(512, 512), rhs=(512, 512), dtype="f32", out_dtype="f32", lhs_contract=(1,), rhs_contract=(0,))
    overhead = call_overhead()
    assert 0 < overhead < 0.01
    assert 0 < time_alone(small, overhead) < time_alone(large, overhead)  # 512x the FLOPs


def test_decode_profile_reports_the_matmul_floor() -> None:
    """profile_decode --floor on a small model: the output projection's dot runs once per step,
    and the floor is the sum of every distinct dot's time alone times its runs."""
    r = run_cli(["-m", "train.bench.profile_decode", "--decode-batch", "4", "--tgt-len", "6", "--d-model", "32",
                 "--ffn", "64", "--layers", "1", "--vocab", "300", "--reps", "1", "--top", "0", "--floor"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    floor_block = r.stdout.split("Matmul floor: ")[1]
    rows = [line.split(" | ") for line in floor_block.splitlines()[3:] if line.startswith("| ")]
    by_dot = {row[0].lstrip("| "): row for row in rows}
    assert by_dot["f32[300, 32] x [4, 32]"][1] == "6"  # the tied output projection (table @ x^T), once per step
    floor_ms = float(floor_block.split(": ")[1].split(" ms")[0])
    assert abs(sum(float(row[4]) for row in rows) - floor_ms) < 0.01 * len(rows) + 0.05
    assert "above the floor" in floor_block

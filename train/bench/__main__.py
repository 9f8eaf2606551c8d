"""`python -m train.bench`: the project's benchmark workload, one JSON object per line.

    python -m train.bench                       # train + decode + data
    python -m train.bench --only train          # one part (train | decode | data, comma-separated)
    python -m train.bench --short               # CI: small model, few steps, same lines and keys
    python -m train.bench --preset gpu512       # d_model 512, 8 heads, 6+6 layers, bfloat16 (for GPUs)
    python -m train.bench --batch 128 --dtype bfloat16 --fsdp --steps 20 ...
    python -m train.bench --only train --torch-python VENV/bin/python   # + interleaved PyTorch rounds
    python -m train.bench --only decode --torch-python VENV/bin/python  # + rounds against HF generate
    python -m train.bench --only decode --run-dir runs/A --run-dir runs/A_pruned  # trained runs' models
    python -m train.bench --scaling --scaling-out DIR  # how the cost grows: heads, length, width, decode
    python -m train.bench --scaling --scaling-tables heads,decode --short   # a subset; CI size

Lines (each has "name"):
  train   ms_per_step, tokens_per_s (source + target tokens), compile_s, flops_per_step,
          peak_flops_per_s, mfu = flops_per_step / (s per step) / peak_flops_per_s, from the
          median of --timing-rounds alternations of peak and step timing (all under "rounds")
  decode  greedy and beam-4 sentences/s, KV-cached and uncached (prefix recomputed each step)
  data    packing pipeline tokens/s and padding efficiency on the embedded corpus's training
          split, and the number of distinct train-step batch shapes over one epoch
  compare (with --torch-python) per round: project_ms, torch_eager_ms, torch_compile_ms and
          their ratios vs_torch_eager / vs_torch_compile; then a round="median" summary
  decode_runs (with --run-dir) per round: each run's greedy and beam sentences/s at fixed length;
          then a round="median" summary with each run's params, heads and ratio to the first run
  compare_decode (with --torch-python) per round: project_ and hf_ greedy / beam4 sentences_per_s
          and their ratios vs_hf_greedy / vs_hf_beam4 (project / HF); then a round="median" summary
  scaling (with --scaling, instead of the lines above) one per point, each measured by a fresh
          `python -m train.bench --only train|decode --peak-memory` with that point's options:
          "table" (heads | length | width | decode), "varied" (the keys it varies) and their values,
          tokens_per_s, mfu, ms_per_step (train tables) or greedy/beam cached/uncached sentences_per_s
          (decode), peak_memory_bytes with its memory_source, and the point's "command";
          --scaling-out DIR adds DIR/scaling.md (one table per study) and DIR/scaling_<table>.png
  (with --peak-memory, the train and decode lines also carry peak_memory_bytes, memory_source and
          start_peak_memory_bytes: the peak before the part built its model)

The workload is described in workload.py, the FLOP counting in train_step.py, the peers in
peer_compare.py (scripts in peers/, run by the --torch-python interpreter), the scaling studies
in scaling.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.bench.compile_timer import CompileTimer
from train.bench.data_pipeline import bench_data
from train.bench.decode import bench_decode, fixed_length_decoders
from train.bench.peak import matmul_peak
from train.bench.peer_compare import (
    PeerError,
    check_peer,
    compare_decode_rounds,
    compare_rounds,
    peer_needs,
)
from train.bench.records import emit, environment, log
from train.bench.run_decode import compare_run_decoding
from train.bench.scaling import peak_memory, run_scaling
from train.bench.train_step import bench_train
from train.bench.workload import parse_args


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv, description=__doc__.splitlines()[0])
    if a.scaling:  # only runs subprocesses (one per point): this process never starts JAX
        run_scaling(a, sys.argv[1:] if argv is None else argv)
        return
    if a.torch_python:
        modules, compared = peer_needs(a.parts)
        scripts = {"train": Path(a.torch_script), "decode": Path(a.hf_script)}
        try:  # before anything is compiled
            found = check_peer(a.torch_python, [scripts[p] for p in compared], modules)
        except PeerError as e:
            raise SystemExit(f"error: {e}") from None
        log(f"peer: {found} ({a.torch_python}), against the project's {' and '.join(compared)}")
    from train.engine.process_setup import configure_process

    configure_process(host_allocator=not a.no_host_allocator_fix)  # as training, before JAX starts
    import jax

    if a.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", a.compilation_cache)
    from train.engine.sharding import initialize_distributed, make_mesh

    initialize_distributed()
    mesh = make_mesh(argparse.Namespace(mesh_data=a.mesh_data, fsdp=a.fsdp))
    timer = CompileTimer()
    env = environment(mesh)
    log(f"{env['devices']} x {env['platform']} ({env['device_kind']}), preset {a.preset}, parts {a.parts}")
    if "train" in a.parts:
        n = a.peak_n or (2048 if env["platform"] == "cpu" else 8192)
        peak, peak_label = matmul_peak(mesh, a.dtype, n)
        start = peak_memory()["peak_memory_bytes"] if a.peak_memory else 0
        rec, seconds_per_step = bench_train(a, mesh, timer, peak)
        rec["peak_matmul"] = peak_label
        if a.peak_memory:
            rec.update({**peak_memory(), "start_peak_memory_bytes": start})
        if env["platform"] == "cpu" and a.preset == "gpu512":
            rec["note"] = "gpu512 is a GPU config; its CPU MFU is not meaningful"
        emit({**rec, **env, "preset": a.preset, "short": a.short})
        if a.torch_python:
            try:
                for record in compare_rounds(a, seconds_per_step, a.torch_python,
                                             Path(a.torch_script), a.rounds):
                    log(f"compare {record['round']}: project {record['project_ms']} ms/step, torch "
                        f"eager {record['torch_eager_ms']} ({record['vs_torch_eager']}x), "
                        f"torch.compile {record['torch_compile_ms']} ({record['vs_torch_compile']}x)")
                    emit({**record, **env, "preset": a.preset, "short": a.short})
            except PeerError as e:
                raise SystemExit(f"error: {e}") from None
    if a.run_dir:  # trained runs' own models, e.g. pruned against unpruned (train/bench/run_decode.py)
        for record in compare_run_decoding(a):
            emit({**record, **env})
    elif "decode" in a.parts:
        start = peak_memory()["peak_memory_bytes"] if a.peak_memory else 0
        rec = bench_decode(a, timer)
        if a.peak_memory:
            rec.update({**peak_memory(), "start_peak_memory_bytes": start})
        emit({**rec, **env, "preset": a.preset, "short": a.short})
        if a.torch_python:
            kinds = ("greedy", f"beam{a.beam}")
            try:
                for record in compare_decode_rounds(a, fixed_length_decoders(a), a.torch_python,
                                                    Path(a.hf_script), a.rounds):
                    log(f"compare_decode {record['round']}: " + ", ".join(
                        f"{k} {record[f'project_{k}_sentences_per_s']} vs HF "
                        f"{record[f'hf_{k}_sentences_per_s']} sentences/s ({record[f'vs_hf_{k}']}x)"
                        for k in kinds))
                    emit({**record, **env, "preset": a.preset, "short": a.short})
            except PeerError as e:
                raise SystemExit(f"error: {e}") from None
    if "data" in a.parts and jax.process_index() == 0:
        emit({**bench_data(a), "short": a.short})


if __name__ == "__main__":
    main()

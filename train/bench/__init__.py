"""The benchmark: `python -m train.bench` (see __main__.py) prints one JSON object per part.

    workload.py       the presets, the command's options, the model config and the synthetic batch
    records.py        the JSON lines on stdout, progress on stderr, the device fields of every line
    compile_timer.py  JAX's own compile durations (jax.monitoring)
    timing.py         the best wall time of a call over several tries, what every timing reports
    peak.py           the matmul peak that MFU divides by
    train_step.py     the train line: the real training step, timed, with its FLOPs and MFU
    decode.py         the decode line: greedy and beam search, with and without the KV cache
    profile_decode.py where a cached decode spends its time, op by op (`python -m train.bench.profile_decode`)
    profile_train.py  where the train step spends its time, op by op, grouped (`python -m train.bench.profile_train`)
    op_trace.py       XLA:CPU's per-op trace and the HLO's op descriptions, shared by the two profilers
    dot_floor.py      the matmul floor: every dot of a compiled step timed alone (the profilers' --floor)
    data_pipeline.py  the data line: the packing pipeline on the embedded corpus
    peer_compare.py   interleaved rounds against the peers below, run by another interpreter
    peers/            the peers: torch_train.py (the train step in PyTorch, eager and
                      torch.compile) and hf_generate.py (Hugging Face generate, greedy and beam)

Its modules may import model/, data/, train.config and train.engine.* (JAX only inside
functions, after the host allocator is configured); none imports torch. The scripts in peers/
are the other way round: torch (and transformers) only, never jax or this project, run as
subprocesses by the `--torch-python` interpreter.
"""

"""Training, evaluation and analysis: the commands, and the library they are thin fronts for.

Commands (`python -m train.<name>`): __main__ (train one run or a sweep), evaluate, translate,
heads, attention_figures, prepare, report/, bench/, explore/. Each parses its arguments (cli.py),
loads what it needs (runs.py for a trained run), calls the library, and prints.

    config.py   the Hydra schemas and the frozen, validated Config; the only module that turns
                Hydra's config object into typed dataclasses
    cli.py      the command-line edge shared by the inference and analysis commands
    runs.py     loading a trained run: config, tokenizer, parameters of a checkpoint, a split
    errors.py   RunError and the one-line form of an exception
    engine/     one training run: the trainer, its step and hooks, checkpoints, loggers
    evals/      evaluators behind one protocol: validation loss, generation scores, alignment,
                the attention probe
    analysis/   attention statistics, alignment scoring, head importance and pruning, plots
    sweep/      the Hydra callback that validates a sweep's grid and records each job
    report/     the sweep report;  bench/  the benchmark
    explore/    the attention explorer: one self-contained HTML page of a run's or a sweep's probes

The only package that sees Hydra. Commands import the library, never another command.
"""

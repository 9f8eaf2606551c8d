"""One training run.

    trainer.py        Trainer: set-up, the loop (a step, then the hooks that are due), the summary
    hooks.py          the one interface everything besides the step plugs in through
    step.py losses.py optimizer.py   the pure jitted step, its loss, the optax chain
    train_metrics.py  the log-point hook: on-device sums fetched, logged, rates measured
    validation.py     the validation hook: evaluators, probe, a ranked checkpoint
    progress.py       the progress bar (real rates, believable time left)
    checkpoint.py     Orbax checkpoints with this project's layout and retention
    resume.py         resuming from a run directory; a metrics log with each step once
    loggers.py wandb_logger.py   metrics.jsonl, TensorBoard, wandb (never waits on a server)
    run_files.py      summary.json and other files written atomically
    signals.py preflight.py   stop signals; unwritable or full folders caught before training
    faults.py         fault injection for the reliability tests, installed as hooks
    sharding.py       devices and meshes
    process_setup.py host_allocator.py xla_flags.py   what a process running the step sets before JAX
                      starts: glibc's malloc settings and XLA's options
    runtime.py        quiet library logs, the persistent compilation cache

May import model/, data/, train.config, train.errors and train.evals (the evaluators it runs);
never a command.
"""

"""Exact resume after SIGKILL and SIGTERM: the end-to-end half of the reliability suite.

Every scenario is a real `python -m train` subprocess of a tiny model (d_model 32, one layer of
each, vocab ~130, 4 x (32+32) token batches) on a generated corpus, so that signals, SIGKILL and
Orbax's asynchronous writes behave as in production. Faults are injected with the
ATTENTION_LAB_FAULT_* hooks of train/engine/faults.py. All runs of the suite (this file and
tests/test_faults.py) are started by `scenarios()` in three waves of concurrent processes (the
first fills a shared XLA compile cache that the others read), so that both CPU cores stay busy;
each test then checks its scenario's outcome. Runs that stop in set-up run in-process. At the end
the suite prints one line: faults injected, bad inputs tried, and runs lost (a scenario whose
checks failed).
"""

from __future__ import annotations

import json
import signal

from reliability_runs import (  # noqa: F401  (print_summary, runs: the suite's fixtures)
    STEPS,
    assert_same_state,
    copy_of_reference,
    metric_lines,
    print_summary,
    resume_argv,
    run_in_process,
    runs,
    scenario,
    sigterm_step,
    steps_on_disk,
    train_losses,
)

from train.engine.checkpoint import CORRUPT_DIR


def test_reference_run_finishes(runs):
    ref = runs["straight"]
    assert ref.rc == 0, ref
    assert sorted(train_losses(ref.run_dir)) == list(range(1, STEPS + 1))
    assert steps_on_disk(ref.run_dir) == ["12", "9"]  # latest 2 (9, 12); 12 is also the best


def test_sigkill_then_resume_is_bitwise_identical(runs):
    """Killed after step 7 (checkpoints 3 and 6 on disk), 6 then truncated: resumed from 3 to 12."""
    with scenario("fault", "SIGKILL between saves"), scenario("bad input", "truncated latest checkpoint"):
        killed, resumed, ref = runs["sigkill"], runs["sigkill_resumed"], runs["straight"]
        assert killed.rc == -signal.SIGKILL, killed
        assert runs["sigkill_listing"] == ["3", "6"]
        assert resumed.rc == 0, resumed
        assert "warning: checkpoint step 6" in resumed.out and "trying step 3" in resumed.out, resumed
        assert "resumed from step 3" in resumed.out, resumed
        assert any(p.name.startswith("6-") for p in (resumed.run_dir / CORRUPT_DIR).iterdir())  # kept aside
        # every step's losses equal the unbroken run's, each logged once (re-logged lines were dropped)
        assert train_losses(resumed.run_dir) == train_losses(ref.run_dir)
        assert_same_state(ref.run_dir, resumed.run_dir, STEPS)  # params, optimizer state, key, counters
        assert any(row.get("step") == 10 and "val/loss" in row for row in metric_lines(resumed.run_dir))


def test_sigkill_during_async_save_keeps_previous_checkpoint(runs):
    with scenario("fault", "SIGKILL during an async save"):
        killed, resumed, ref = runs["sigkill_in_save"], runs["sigkill_in_save_resumed"], runs["straight"]
        assert killed.rc == -signal.SIGKILL, killed
        listing = runs["sigkill_in_save_listing"]
        assert "6" not in listing and any(n.startswith("6.orbax-checkpoint-tmp") for n in listing), listing
        assert resumed.rc == 0, resumed
        assert "resumed from step 3" in resumed.out, resumed
        assert not any("tmp" in n for n in steps_on_disk(resumed.run_dir))  # the partial save was cleaned up
        assert train_losses(resumed.run_dir) == train_losses(ref.run_dir)
        assert_same_state(ref.run_dir, resumed.run_dir, STEPS)


def test_sigterm_saves_names_step_and_resumes(runs):
    with scenario("fault", "SIGTERM"):
        run, step = runs["sigterm"], runs["sigterm_step"]
        assert run.rc == 143, run
        assert step is not None and step >= 4, run
        assert str(step) in steps_on_disk(run.run_dir), steps_on_disk(run.run_dir)  # committed, not tmp
        command = resume_argv(run.out)
        assert command[:3] == ["python", "-m", "train"] and f"hydra.run.dir={run.run_dir}" in command, run
        resumed = runs["sigterm_resumed"]
        assert resumed.rc == 0, resumed
        assert f"resumed from step {step}" in resumed.out, resumed
        assert sorted(train_losses(resumed.run_dir)) == list(range(1, step + 4))


def test_rerun_of_finished_run_changes_nothing(runs, capsys):
    run_dir = copy_of_reference(runs, "rerun_finished")
    summary = run_in_process(runs["ws"], run_dir)
    assert "already finished at step 12" in capsys.readouterr().out
    assert summary == json.loads((runs["straight"].run_dir / "summary.json").read_text())
    assert train_losses(run_dir) == train_losses(runs["straight"].run_dir)

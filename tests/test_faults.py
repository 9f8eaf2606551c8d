"""Faults and bad inputs: damaged checkpoints, a changed model, non-finite steps, unwritable folders.

The reliability suite with tests/test_resume.py, whose harness starts every run of the suite (see
its docstring). The end-to-end checks below read those runs' outcomes; the unit checks at the end
exercise the same code paths in-process, in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from reliability_runs import (  # noqa: F401  (print_summary: the autouse fixture that prints the summary line)
    assert_clean_error,
    checkpoint_arrays,
    copy_of_reference,
    damage,
    metric_lines,
    print_summary,
    run_in_process,
    scenario,
    scenarios,
    steps_on_disk,
    train_losses,
)

from train.engine import faults, preflight, resume, signals
from train.engine.checkpoint import Checkpointer, CheckpointError, config_diff


@pytest.fixture(scope="module")
def runs() -> dict:
    return scenarios()


# ---- bad inputs on copies of the finished reference run (in-process: they stop in set-up) ----------------


def setup_error(runs: dict, name: str, overrides: dict | None = None, damage_steps: dict | None = None):
    """Run set-up on a copy of the reference run; return (run_dir, the SystemExit message)."""
    run_dir = copy_of_reference(runs, name)
    for step, how in (damage_steps or {}).items():
        damage(run_dir / "checkpoints" / str(step), how)
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(runs["ws"], run_dir, overrides)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "Traceback" not in message, message
    return run_dir, message


def test_no_valid_checkpoint_is_a_clear_error(runs):
    with scenario("bad input", "all checkpoints truncated or with missing files"):
        run_dir, message = setup_error(runs, "corrupt_all", damage_steps={12: "truncate", 9: "delete"})
        for needle in ("no valid checkpoint in", "step 12:", "step 9:", "train.resume=false", "hydra.run.dir"):
            assert needle in message, message
        assert steps_on_disk(run_dir) == ["12", "9"]  # nothing moved or deleted


def test_changed_model_config_lists_the_differing_keys(runs):
    with scenario("bad input", "changed model config (d_model)"):
        _, message = setup_error(runs, "changed_model", {"model.d_model": "48"})
        assert "model-defining keys differ" in message and "d_model: checkpoint 32, now 48" in message, message
        assert "ffn_dim" not in message  # only what changed


def test_resume_false_refuses_to_overwrite(runs):
    with scenario("bad input", "train.resume=false on a run with checkpoints"):
        run_dir, message = setup_error(runs, "no_resume", {"train.resume": "false"})
        assert "refusing to overwrite" in message and "latest step 12" in message, message
        assert train_losses(run_dir) == train_losses(runs["straight"].run_dir)  # untouched


# ---- non-finite steps ----------------------------------------------------------------------------


def test_nonfinite_skip_counts_logs_and_stops_after_streak(runs):
    # NaN gradients at steps 4, 7 and 8 (NAN_STEPS); train.max_nonfinite_in_row=2
    with scenario("fault", "NaN gradients (skip)"):
        run = runs["nan_skip"]
        rows = {row["step"]: row for row in metric_lines(run.run_dir) if "train/nonfinite_steps" in row}
        assert rows[4]["train/nonfinite_steps"] == 1 and rows[4]["train/loss"] is None  # skipped, not a loss of 0
        assert all(rows[s]["train/nonfinite_steps"] == 0 and np.isfinite(rows[s]["train/loss"]) for s in (5, 6))
        assert "skipped 1 non-finite update(s)" in run.out, run  # step 4: warned, training went on
        assert_clean_error(run, "2 non-finite losses or gradients in a row, the last at step 8",
                           "last good checkpoint is step 6")
        assert max(rows) == 8
        params = [v for k, v in checkpoint_arrays(run.run_dir, 6).items() if "params" in k]
        assert params and all(np.isfinite(v).all() for v in params)


def test_nonfinite_stop_keeps_last_good_checkpoint(runs):
    with scenario("fault", "NaN gradient (stop)"):
        run = runs["nan_stop"]
        assert_clean_error(run, "non-finite loss or gradient at step 4 (train.nonfinite=stop)",
                           "last good checkpoint is step 3")
        assert steps_on_disk(run.run_dir) == ["3"]


# ---- unwritable output folders -----------------------------------------------------------------


def test_read_only_run_dir_fails_at_startup(runs):
    if runs["ro_prefix"] is None:
        pytest.skip("cannot make a folder read-only here (root without setpriv)")
    with scenario("bad input", "read-only run folder"):
        run = runs["ro_run_dir"]
        assert run.rc == 2, run
        assert_clean_error(run, "cannot write the run folder", "not writable")
        assert not run.run_dir.exists()


def test_read_only_checkpoint_dir_fails_before_training(runs):
    if runs["ro_prefix"] is None:
        pytest.skip("cannot make a folder read-only here (root without setpriv)")
    with scenario("bad input", "read-only checkpoints folder"):
        run = runs["ro_checkpoints"]
        assert_clean_error(run, "cannot write to", "checkpoints", "Nothing was trained")
        assert not (run.run_dir / "metrics.jsonl").exists()


def test_full_disk_is_an_error_at_startup(tmp_path, monkeypatch):
    with scenario("bad input", "full disk"):
        usage = type("usage", (), {"free": 3 << 20, "total": 1 << 30, "used": 0})
        monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage)
        with pytest.raises(SystemExit, match="has 3.0 MiB free but one checkpoint needs about 12.0 MiB"):
            preflight.check_free_space(tmp_path, 10 << 20, keep=2)
        preflight.check_free_space(tmp_path, 1 << 20, keep=0)  # fits: no error


# ---- in-process unit checks ----------------------------------------------------------------------


def test_second_sigint_exits_at_once():
    with scenario("fault", "SIGINT twice"):
        before = signal.getsignal(signal.SIGINT)
        with signals.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.received == "SIGINT"  # first: a flag, the loop saves and exits
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.received == "SIGINT"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_trim_metrics_log_drops_relogged_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "train/loss": float(s)} for s in range(1, 8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "train/lo')
    assert resume.trim_metrics_log(path, 5) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert resume.trim_metrics_log(path, 5) == 0


def test_nan_hook_parses_steps(monkeypatch):
    monkeypatch.setenv(faults.ENV_NAN, "4,7:2")
    assert faults.nan_steps() == (4, 7, 8)
    monkeypatch.delenv(faults.ENV_NAN)
    assert faults.nan_steps() is None


def test_checkpointer_keeps_latest_and_best_and_falls_back(tmp_path):
    import jax.numpy as jnp

    tree = {"w": jnp.arange(8.0), "k": jnp.zeros((2,), jnp.uint32)}
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=2, writer=True)
    for step, metric in ((1, None), (2, 5.0), (3, 1.0), (4, None), (5, None)):
        assert ckpt.save(step, {"w": tree["w"] + step, "k": tree["k"]}, {"step": step}, metric)
    assert not ckpt.save(5, tree, {"step": 5})  # already saved: nothing done
    ckpt.wait()
    assert ckpt.all_steps() == [2, 4, 5]  # latest 2, plus the best by metric
    assert ckpt.best_step() == 2
    with pytest.raises(SystemExit, match="mismatch"):  # check_meta errors stop the search, nothing moved
        ckpt.restore_latest(tree, lambda meta: (_ for _ in ()).throw(SystemExit("mismatch")))
    for f in (tmp_path / "checkpoints" / "5" / "state").rglob("d/*"):
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    restored = ckpt.restore_latest(tree, lambda meta: None)
    assert restored.step == 4 and restored.skipped == [5]
    assert np.array_equal(np.asarray(restored.state["w"]), np.arange(8.0) + 4)
    assert ckpt.all_steps() == [2, 4]
    for step in (2, 4):
        (tmp_path / "checkpoints" / str(step) / "meta" / "metadata").write_text("{trunc")
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        ckpt.restore_latest(tree, lambda meta: None)
    ckpt.close()


def test_config_diff_names_keys():
    assert config_diff({"d_model": 32, "ffn_dim": 64}, {"d_model": 48, "ffn_dim": 64}) == [
        "d_model: checkpoint 32, now 48"]

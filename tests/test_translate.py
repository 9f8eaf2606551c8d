"""`python -m train.translate` end to end: a pipe that carries translations only, blank and
over-long lines, files in and out, and a clear error for a run without a checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_evaluate import FAST_XLA, STEPS, lines, train_tiny_run

pytestmark = pytest.mark.slow  # trains a model (subprocess) once per session


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same tiny run as tests/test_evaluate.py (trained once per session).
    return train_tiny_run(tmp_path_factory.getbasetemp() / "tiny_trained")


def test_pipe(run_dir: Path) -> None:
    sources = lines(run_dir.parent / "corpus" / "test.en")[:6]
    too_long = " ".join(["red blue green"] * 20)  # far over data.max_source_len=16 tokens
    stdin = "\n".join(sources + ["", too_long, "   ", sources[0]]) + "\n"
    proc = run_cli(["-m", "train.translate", f"run_dir={run_dir}", f"step={STEPS}"], input=stdin, env=FAST_XLA)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.split("\n")
    assert out[-1] == "" and len(out) - 1 == 10, proc.stdout  # one line out per line in
    # The final checkpoint translates the test sources exactly as training's test decode did.
    assert out[:6] == lines(run_dir / "test.hyp.txt")[:6]
    assert out[6] == "" and out[8] == ""  # blank in, blank out
    assert out[7].strip()  # truncated, still translated
    assert out[9] == out[0]
    assert "input line 8" in proc.stderr and "truncated" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_files_and_beam(run_dir: Path, tmp_path: Path) -> None:
    from train.translate import main

    src = tmp_path / "in.txt"
    src.write_text("one two three\n\nthe big dog sees the cat\n", encoding="utf-8")
    dst = tmp_path / "out.txt"
    main([f"run_dir={run_dir}", f"input={src}", f"output={dst}", "decode.beam_size=2"])
    out = lines(dst)
    # One line out per line in, the blank one kept blank (a 20-step model may also emit an empty
    # translation for a real sentence, so only the blank line's output is pinned down).
    assert len(out) == 3 and out[1] == ""
    assert dst.read_text(encoding="utf-8").endswith("\n")


def test_no_checkpoint_is_a_clear_error(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.translate import main

    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    with pytest.raises(SystemExit) as exit_info:
        main([f"run_dir={bare}"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and "no checkpoint yet" in captured.err

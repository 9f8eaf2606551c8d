"""Bad input a new user would try, beyond the ones the feature tests cover (docs/reliability.md
lists them all): each gets a non-zero exit or a warning that names the problem and the fix, no
traceback, and damages nothing on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from data.errors import DataError
from data.sources import load_splits
from tests.conftest import run_cli
from tests.test_data_sources import local_cfg, make_text_corpus
from tests.test_evaluate import FAST_XLA, STEPS, train_tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.getbasetemp() / "tiny_trained")


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "metrics.jsonl"}


def translate(run_dir: Path, data: bytes):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "train.translate", f"run_dir={run_dir}", f"step={STEPS}"],
                          input=data, capture_output=True, cwd=REPO_ROOT, timeout=600,
                          env={**__import__("os").environ, **FAST_XLA})


@pytest.mark.slow
@pytest.mark.parametrize("name, data, lines", [
    ("latin-1 text", "la casa está aquí\n".encode("latin-1") + b"the red cat\n", 2),
    ("binary", bytes(range(256)) + b"\n\x00\x00\xff\n", 3),
    ("empty", b"", 0),
    ("one enormous line", ("red blue " * 20000 + "\n").encode(), 1),
])
def test_translate_survives_what_it_is_fed(run_dir: Path, name: str, data: bytes, lines: int):
    before = fingerprint(run_dir)
    proc = translate(run_dir, data)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-2000:]
    assert proc.stdout.decode("utf-8").count("\n") == lines, name  # one line out per line in
    assert "Traceback" not in err and f"translated {lines} lines" in err
    if name in ("latin-1 text", "binary"):
        assert "not valid UTF-8" in err and "iconv" in err
    if name == "one enormous line":
        assert "truncated" in err
    assert fingerprint(run_dir) == before  # the run directory is read, never written


@pytest.mark.slow
def test_translate_names_a_missing_input_file(run_dir: Path, tmp_path: Path):
    proc = run_cli(["-m", "train.translate", f"run_dir={run_dir}", f"input={tmp_path / 'nope.txt'}"], env=FAST_XLA)
    assert proc.returncode == 2 and "cannot read input=" in proc.stderr and "Traceback" not in proc.stderr


def test_a_language_pair_the_files_do_not_have(tmp_path: Path):
    folder = tmp_path / "corpus"
    make_text_corpus(folder, {"train": 20, "validation": 5})
    with pytest.raises(DataError) as e:
        load_splits(local_cfg(tmp_path, folder, format="text", source_lang="fr"), tmp_path)
    assert "fr" in str(e.value) and "data.source_lang" in str(e.value)


def test_data_path_that_is_a_file(tmp_path: Path):
    file = tmp_path / "corpus.txt"
    file.write_text("not a folder\n")
    with pytest.raises(DataError) as e:
        load_splits(local_cfg(tmp_path, file, format="text"), tmp_path)
    assert str(file) in str(e.value)


def test_csv_with_embedded_newlines_and_quotes(tmp_path: Path):
    import csv

    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = [("He said \"hi\",\nthen left.", "Dijo \"hola\",\ny se fue."), ("plain", "llano"),
            ("a, b; c", "x \"y\" z")] * 4
    for split in ("train", "validation"):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["en", "es"])
            writer.writerows(rows)
    dd = load_splits(local_cfg(tmp_path, folder, format="csv"), tmp_path)
    assert len(dd["train"]) == len(rows)  # a quoted newline does not split a row
    assert dd["train"][0]["source"] == rows[0][0] and dd["train"][0]["target"] == rows[0][1]


def test_hub_dataset_that_does_not_exist_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from data.config import DataConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = DataConfig(name="nope", source="hub", hub_id="nobody/no-such-dataset", source_lang="de", target_lang="en",
                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        load_splits(cfg, tmp_path)
    assert "nobody/no-such-dataset" in str(e.value) and "data=local" in str(e.value)


def test_a_config_typo_fails_before_any_work(tmp_path: Path):
    proc = run_cli(["-m", "train", "train.max_step=10", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    assert proc.returncode != 0 and "max_step" in proc.stderr and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_checkpoint_with_another_vocabulary(run_dir: Path, tmp_path: Path):
    """A run folder whose tokenizer.json was replaced by one of another vocabulary size."""
    import shutil

    import datasets

    from data.config import DataConfig
    from data.tokenizer import train_tokenizer

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    pairs = datasets.Dataset.from_dict({"source": ["the red cat sees a dog"] * 20, "target": ["el gato rojo"] * 20})
    train_tokenizer(DataConfig(vocab_size=40), pairs).save(copy / "tokenizer.json")
    before = fingerprint(copy)
    proc = run_cli(["-m", "train.evaluate", f"run_dir={copy}", "limit=2"], env=FAST_XLA)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "vocab_size: checkpoint" in proc.stderr and "tokenizer.json" in proc.stderr
    assert fingerprint(copy) == before

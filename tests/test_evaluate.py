"""`python -m train.evaluate` end to end on a tiny trained run, and every unusable run directory.

One tiny model is trained per session (subprocess, like a user) and shared with
tests/test_translate.py through `train_tiny_run`. The central check: evaluating the final
checkpoint reproduces training's own test hypotheses and BLEU, so the two share one decoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # trains a model (subprocess) once per session

EN = "one two three four five six seven eight nine ten red blue green big small house dog cat sees the".split()
ES = "uno dos tres cuatro cinco seis siete ocho nueve diez rojo azul verde grande pequeño casa perro gato ve el".split()
STEPS = 20  # eval_every=10: checkpoints at 10 and 20, both with a validation metric
# Compiling dominates these tiny runs; XLA's cheapest CPU pipeline roughly halves it. Every
# subprocess gets the same flags, so training and evaluate/translate still compute identically.
FAST_XLA = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}


def write_corpus(folder: Path) -> None:
    """A word-for-word EN->ES toy corpus: train/validation/test.{en,es}, deterministic."""
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 200), ("validation", 16), ("test", 16)):
        pairs = []
        for _ in range(n):
            words = [rng.randrange(len(EN)) for _ in range(rng.randint(2, 5))]
            pairs.append((" ".join(EN[w] for w in words), " ".join(ES[w] for w in words)))
        (folder / f"{split}.en").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
        (folder / f"{split}.es").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")


def train_tiny_run(base: Path) -> Path:
    """Train (once per session: reused when `base/run` is finished) and return the run dir."""
    run_dir = base / "run"
    if (run_dir / "summary.json").exists():
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    write_corpus(base / "corpus")
    proc = run_cli([
        "-m", "train", "model=tiny", "model.num_layers=1", "data=local", f"data.path={base / 'corpus'}",
        "data.source_lang=en", "data.target_lang=es", "data.vocab_size=100", "data.max_source_len=16",
        "data.max_target_len=16", "data.max_tokens=256", f"data.cache_dir={base / 'data-cache'}",
        f"train.max_steps={STEPS}", "train.log_every=10", "train.eval_every=10", "train.val_bleu_examples=8",
        "train.probe_examples=0", "train.progress=false", f"train.compilation_cache={base / 'jax-cache'}",
        "logger=jsonl", f"hydra.run.dir={run_dir}",
    ], env=FAST_XLA)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.getbasetemp() / "tiny_trained")


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_evaluate_reproduces_training_test_scores(run_dir: Path) -> None:
    proc = run_cli(["-m", "train.evaluate", f"run_dir={run_dir}", "split=test", f"step={STEPS}"], env=FAST_XLA)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("test BLEU "), proc.stdout  # the pasteable line
    assert "greedy" in out[0] and f"step {STEPS}" in out[0] and "nrefs:1" in out[0]

    result = json.loads((run_dir / "eval" / "test.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["step"] == STEPS and result["examples"] == 16
    assert result["decode"]["beam_size"] == 1  # the run's decode config (decode=greedy)
    assert result["bleu"] == summary["test/bleu"] and result["chrf"] == summary["test/chrf"]
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert "chrf_signature" in result
    # Beside sacreBLEU, the tutorials' lowercased tokenized BLEU of the same hypotheses.
    from train.evals.scores import tutorial_bleu

    refs = lines(run_dir.parent / "corpus" / "test.es")
    assert result["bleu_lc_tok"] == tutorial_bleu(lines(run_dir / "eval" / "test.hyp.txt"), refs)["bleu_lc_tok"]
    assert result["bleu_lc_tok_signature"].startswith("nrefs:1|case:lc|eff:no|tok:intl")
    assert f"lowercased tokenized BLEU {result['bleu_lc_tok']:.2f}" in out[0]
    # Same decoder, same checkpoint: the very hypotheses training wrote at its end.
    assert lines(run_dir / "eval" / "test.hyp.txt") == lines(run_dir / "test.hyp.txt")


def test_evaluate_best_checkpoint_with_beam(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from train.engine.checkpoint import Checkpointer
    from train.evaluate import main

    main([f"run_dir={run_dir}", "split=validation", "decode.beam_size=2", "limit=6"])
    assert capsys.readouterr().out.startswith("validation BLEU ")
    result = json.loads((run_dir / "eval" / "validation.json").read_text())
    checkpointer = Checkpointer(run_dir / "checkpoints")
    assert result["step"] == checkpointer.best_step()  # chosen by the validation metric
    checkpointer.close()
    assert result["checkpoint"] == "best" and result["examples"] == 6
    assert result["decode"] == {"beam_size": 2, "alpha": 0.6, "max_len_a": 1.5, "max_len_b": 10, "batch_size": 64}
    assert len(lines(run_dir / "eval" / "validation.hyp.txt")) == 6


def test_a_sweep_runs_folder_name_is_a_run_dir(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Hydra's multirun names run folders `N_key=value,key=value`; `=` and `,` are override
    syntax, so such a run_dir is quoted for Hydra before composing (train/cli.py)."""
    from train.evaluate import main

    sweep_run = tmp_path / "it's a sweep" / "3_model.num_heads=2,seed=0"
    shutil.copytree(run_dir, sweep_run, ignore=shutil.ignore_patterns("eval"))
    main([f"run_dir={sweep_run}", "split=validation", "limit=2"])
    assert capsys.readouterr().out.startswith("validation BLEU ")
    assert len(lines(sweep_run / "eval" / "validation.hyp.txt")) == 2


def test_only_string_fields_are_quoted() -> None:
    from train.cli import quote_string_value
    from train.heads import HeadsArgs

    assert quote_string_value("run_dir=m/3_a=1,b=2", HeadsArgs) == "run_dir='m/3_a=1,b=2'"
    assert quote_string_value("run_dir=plain/dir", HeadsArgs) == "run_dir=plain/dir"
    assert quote_string_value("orders=[importance,random]", HeadsArgs) == "orders=[importance,random]"  # list[str]
    assert quote_string_value("limit=3", HeadsArgs) == "limit=3"


def test_decode_options_default_to_the_runs() -> None:
    from omegaconf import OmegaConf

    from model.config import ConfigError
    from train.config import DecodeConfig
    from train.cli import DecodeOverrides, decode_config

    run = DecodeConfig(beam_size=4, alpha=1.0, batch_size=32)
    given = OmegaConf.structured(DecodeOverrides(beam_size=1, max_len_b=5))
    assert decode_config(run, given) == DecodeConfig(beam_size=1, alpha=1.0, max_len_b=5, batch_size=32)
    with pytest.raises(ConfigError, match="beam_size"):
        decode_config(run, OmegaConf.structured(DecodeOverrides(beam_size=0)))


def copy_run_without_checkpoints(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    return dest


def test_unusable_run_dirs_say_what_to_do(run_dir: Path, tmp_path: Path) -> None:
    from train.errors import RunError
    from train.runs import load_run

    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(RunError, match="not a training run directory.*multirun"):
        load_run(run_dir.parent)  # a folder of runs, like a sweep directory
    bare = copy_run_without_checkpoints(run_dir, tmp_path / "bare")
    with pytest.raises(RunError, match="no checkpoint yet"):
        load_run(bare)
    (bare / "checkpoints").mkdir()  # created, nothing saved yet
    with pytest.raises(RunError, match="no checkpoint yet"):
        load_run(bare)
    with pytest.raises(RunError, match="no checkpoint at step 7.*10, 20"):
        load_run(run_dir, step=7)


@pytest.mark.parametrize("edit, message", [
    (("d_model: 64", "d_model: 32"), r"another model config.*model.d_model: checkpoint 64, config 32"),
    (("d_model: 64", "d_model: 64\n  new_knob: 1"), r"does not match this code.*new_knob"),
    (("num_heads: 4", "num_heads: 3"), r"does not pass this code's checks.*num_heads=3"),
])
def test_config_that_does_not_match(run_dir: Path, tmp_path: Path, edit: tuple, message: str) -> None:
    from train.errors import RunError
    from train.runs import load_run

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    config = copy / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace(*edit, 1))
    with pytest.raises(RunError, match=message):
        load_run(copy)


def test_cli_errors_are_one_message(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.evaluate import main

    bare = copy_run_without_checkpoints(run_dir, tmp_path / "bare")
    proc = run_cli(["-m", "train.evaluate", f"run_dir={bare}"])  # as a user sees it
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: ") and "no checkpoint yet" in proc.stderr
    assert "Traceback" not in proc.stderr
    for args, message in (([f"run_dir={run_dir}", "decode.beem_size=2"], "decode.beem_size"),
                          ([], "missing run_dir"), ([f"run_dir={run_dir}", "split=dev"], "no 'dev' split")):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err

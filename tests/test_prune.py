"""`python -m train.prune` end to end, on tiny runs of the toy corpus: a run, its gated fine-tune
(train.init_from, train.gate_l0), the pruned copy of that, which loads through the run loader,
computes and decodes what the gated-off full model does, resumes training, and is analysed by
`python -m train.heads`; plus the selection rules and the command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

from model.config import ATTENTION_TYPES
from model.decoding import make_decode_fn
from model.transformer import Transformer
from tests.conftest import run_cli
from tests.test_heads import FAST_XLA, toy_corpus
from train.analysis.head_selection import select_heads
from train.engine.init_from import merge_params
from train.prune import main as prune_main
from train.runs import load_run

MODEL = ["model=tiny", "model.d_model=32", "model.num_heads=4", "model.ffn_dim=64", "model.num_layers=1",
         "model.max_len=16"]


def train_args(tmp: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    return ["-m", "train", *MODEL, f"data.path={tmp / 'corpus'}", f"data.cache_dir={tmp / 'cache'}",
            "data.test_split=null", "data.vocab_size=100", "data.max_source_len=16", "data.max_target_len=16",
            "data.max_tokens=256", f"train.max_steps={steps}", "train.eval_every=5", "train.log_every=5",
            "train.checkpoint_every=0", "train.val_bleu_examples=4", "train.probe_examples=2",
            "train.progress=false", "train.compilation_cache=null", "decode.batch_size=8", "logger=jsonl",
            *extra, f"hydra.run.dir={run_dir}"]


def check(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """base: 10 steps without gates; gated: 10 more from base's weights with gates and an L0 penalty."""
    tmp = tmp_path_factory.mktemp("prune")
    toy_corpus(tmp / "corpus", {"train": 200, "validation": 12})
    base, gated = tmp / "base", tmp / "gated"
    check(run_cli(train_args(tmp, base, 10), env=FAST_XLA))
    out = check(run_cli(train_args(tmp, gated, 10, "model.head_gates=concrete", "train.gate_l0=0.5",
                                   f"train.init_from={base}", "optim.lr=0.01"), env=FAST_XLA))
    assert f"train.init_from: starting from {base.name}" in out
    return {"tmp": tmp, "base": base, "gated": gated}


def test_gated_run_logs_open_heads(runs):
    logged = [json.loads(line) for line in (runs["gated"] / "metrics.jsonl").read_text().splitlines()]
    points = [m for m in logged if "gates/open" in m]
    assert [m["step"] for m in points] == [5, 10]
    for kind in ATTENTION_TYPES:
        assert 0.0 < points[-1][f"gates/{kind}/layer0/open"] <= 4.0
    assert points[-1]["gates/open"] < points[0]["gates/open"] <= 12  # the penalty closes gates
    assert points[-1]["train/gate_l0_penalty"] == pytest.approx(0.5 * points[-1]["gates/open"])


def prune(*args: str) -> None:
    prune_main(list(args))


@pytest.fixture(scope="module")
def pruned(runs) -> Path:
    out = runs["tmp"] / "pruned"
    prune(f"run_dir={runs['gated']}", "by=gates", "keep=5", f"out={out}")
    return out


def masked_full(source: Path, kept: dict):
    """The gated run's model with model.head_mask zeros on the heads pruning removed."""
    run = load_run(source)
    counts = run.config.model.resolved_head_counts()
    mask = {k: [[1.0 if h in kept[k][l] else 0.0 for h in range(n)] for l, n in enumerate(counts[k])] for k in counts}
    cfg = run.config.model.__class__(**{**run.config.model.__dict__, "head_mask": mask})
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(cfg, run.tokenizer.vocab_size, rngs=nnx.Rngs(0))))
    return graphdef, run.params


def test_pruned_run_loads_and_equals_the_gated_off_full_model(runs, pruned):
    info = json.loads((pruned / "pruned.json").read_text())
    kept = info["kept_heads"]
    assert sum(len(h) for rows in kept.values() for h in rows) == info["kept"] == 5 and info["of"] == 12
    small = load_run(pruned)  # the ordinary run loader: config, tokenizer, checkpoint
    counts = small.config.model.resolved_head_counts()
    assert {k: list(v) for k, v in counts.items()} == {k: [len(h) for h in kept[k]] for k in kept}
    assert small.config.model.head_gates == "concrete" and small.step == 10
    assert info["params"]["after"] < info["params"]["before"]
    # The kept heads are the five with the highest P(open).
    chosen = {(k, l, h) for k in kept for l, hs in enumerate(kept[k]) for h in hs}
    scores = {(k, l, h): v for k, rows in info["scores"].items() for l, row in enumerate(rows) for h, v in enumerate(row)}
    assert min(scores[x] for x in chosen) >= max(v for x, v in scores.items() if x not in chosen)

    graphdef, params = masked_full(runs["gated"], kept)
    rng = np.random.default_rng(0)
    src = jnp.asarray(np.concatenate([rng.integers(4, 100, (3, 7)), np.full((3, 1), 2)], 1), jnp.int32)
    tgt = jnp.asarray(np.concatenate([np.ones((3, 1)), rng.integers(4, 100, (3, 6))], 1), jnp.int32)
    logits = lambda g, p: np.asarray(jax.jit(lambda p: nnx.merge(g, p)(src, tgt))(p))
    np.testing.assert_allclose(logits(small.graphdef, small.params), logits(graphdef, params), atol=1e-5, rtol=0)
    decode = lambda g, p: np.asarray(make_decode_fn(g, beam_size=1, alpha=0.6, max_len=12, max_len_a=1.5,
                                                    max_len_b=4)(p, src))
    np.testing.assert_array_equal(decode(small.graphdef, small.params), decode(graphdef, params))
    check(run_cli(["-m", "train.evaluate", f"run_dir={pruned}", "split=validation", "limit=4"], env=FAST_XLA))
    assert json.loads((pruned / "eval" / "validation.json").read_text())["examples"] == 4


def test_decode_bench_on_the_pruned_and_the_full_run(runs, pruned):
    """`train.bench --run-dir A --run-dir B` decodes with each run's own model, in alternating rounds."""
    out = check(run_cli(["-m", "train.bench", "--only", "decode", "--run-dir", str(runs["gated"]), "--run-dir",
                         str(pruned), "--rounds", "2", "--decode-batch", "3", "--src-len", "5", "--tgt-len", "6",
                         "--decode-reps", "1"], env=FAST_XLA))
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["round"] for r in records] == [0, 1, "median"]
    median = records[-1]
    assert [r["heads"] for r in median["runs"]] == [12, 5]
    assert median["runs"][1]["params"] < median["runs"][0]["params"]
    full, small = str(runs["gated"]), str(pruned)
    for kind in ("greedy", "beam4"):
        assert median["vs_first"][full][kind] == 1.0 and median["vs_first"][small][kind] > 0
        assert median["sentences_per_s"][small][kind] == pytest.approx(
            float(np.median([r["sentences_per_s"][small][kind] for r in records[:2]])), abs=0.01)
    bad = run_cli(["-m", "train.bench", "--run-dir", str(pruned)], timeout=120)
    assert bad.returncode != 0 and "use it with --only decode" in bad.stderr


def test_pruned_run_resumes_training_and_is_analysed(runs, pruned):
    overrides = OmegaConf.to_container(OmegaConf.load(pruned / ".hydra" / "overrides.yaml"))
    assert any(o.startswith("model.head_counts={") for o in overrides)
    args = ["-m", "train", *[o for o in overrides if not o.startswith("train.max_steps=")],
            f"hydra.run.dir={pruned}", "train.max_steps=12"]
    out = check(run_cli(args, env=FAST_XLA))
    assert "resumed from step 10" in out
    summary = json.loads((pruned / "summary.json").read_text())
    assert summary["steps"] == 12 and np.isfinite(summary["val/loss"])
    assert (pruned / "explorer.html").is_file()  # the probe and the explorer on layers of different widths
    counts = load_run(pruned).config.model.resolved_head_counts()
    for kind, per_layer in counts.items():
        with np.load(pruned / "attention" / "step_12" / f"{kind}_layer0.npz") as npz:
            assert npz["weights"].shape[1] == per_layer[0]

    page_without_errors(pruned / "explorer.html", counts)

    check(run_cli(["-m", "train.heads", f"run_dir={pruned}", "batch_rows=8", "prune_step=0.5"], env=FAST_XLA))
    r = json.loads((pruned / "heads" / "heads.json").read_text())
    assert r["model"]["heads_total"] == 5
    for kind, per_layer in counts.items():
        assert [len(row) for row in r["importance"][kind]["normalized"]] == list(per_layer)
        assert [len(row) for row in r["roles"][kind]] == list(per_layer)
        assert [len(row) for row in r["gates"]["open_probability"][kind]] == list(per_layer)
    assert set(r["roles"]["counts"]) == {"positional", "rare_token", "sink", "alignment"}
    orders = r["pruning_orders"]  # a gated run: the trained gates give an order too, lowest P(open) first
    assert set(orders) == {"importance", "gates", "random"}
    p_open = [r["gates"]["open_probability"][k][l][h] for k, l, h in orders["gates"]["order"]]
    assert p_open == sorted(p_open) and len(p_open) == 5
    assert orders["gates"]["mean"][0] == orders["random"]["mean"][0] == r["pruning_curve"][0]["bleu"]
    assert r["roles"]["frequencies"].startswith("train split")


def page_without_errors(page_path: Path, counts: dict) -> None:
    """The explorer page of a pruned run in headless Chromium: each type's model view has one
    map per real head and an empty cell per head a layer lacks; nothing logs an error."""
    from tests.test_explorer_browser import CHROMIUM, assert_clean, opened

    if not CHROMIUM.exists():
        return  # the browser tests skip too; the page's data was checked above
    with opened(page_path) as (page, errors, requests):
        for kind, per_layer in counts.items():
            if sum(per_layer) == 0:
                continue  # the type is still listed; the page moves to one with heads
            page.select_option("#type", kind)
            widest = max(per_layer)
            assert page.locator("#model .thumb").count() == sum(per_layer), kind
            assert page.locator("#model .nohead").count() == widest * len(per_layer) - sum(per_layer), kind
        assert_clean(errors, requests)


def test_by_importance_and_random(runs, tmp_path):
    prune(f"run_dir={runs['base']}", "by=importance", "keep=6", f"out={tmp_path / 'imp'}", "limit=8", "batch_rows=8")
    info = json.loads((tmp_path / "imp" / "pruned.json").read_text())
    assert info["scores_from"].startswith("gate gradients over 8 validation pairs") and info["kept"] == 6
    for seed_dir in ("r1", "r2"):
        prune(f"run_dir={runs['base']}", "by=random", "threshold=0.5", "seed=3", f"out={tmp_path / seed_dir}")
    first, second = (json.loads((tmp_path / d / "pruned.json").read_text()) for d in ("r1", "r2"))
    assert first["kept_heads"] == second["kept_heads"] and first["scores"] == second["scores"]
    kept = {(k, l, h) for k, rows in first["kept_heads"].items() for l, hs in enumerate(rows) for h in hs}
    above = {(k, l, h) for k, rows in first["scores"].items() for l, row in enumerate(rows)
             for h, v in enumerate(row) if v >= 0.5}
    assert kept == above
    load_run(tmp_path / "imp")


def test_command_errors(runs, tmp_path, capsys):
    for args, message in [
        (["by=importance", "keep=3", "threshold=0.5"], "exactly one of keep=N"),
        (["by=gates", "keep=3"], "by=gates needs a run trained with model.head_gates=concrete"),
        (["by=random", "keep=13"], "keep=13 must be between 0 and the 12 heads"),
        (["by=size", "keep=3"], "by=size is not one of gates, importance, random"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            prune(f"run_dir={runs['base']}", f"out={tmp_path / 'x'}", *args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, args
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    with pytest.raises(SystemExit):
        prune(f"run_dir={runs['base']}", "by=random", "keep=2", f"out={tmp_path / 'taken'}")
    assert "exists and is not empty" in capsys.readouterr().err


def test_selection_rules():
    present = {"encoder_self": np.array([[True, True]]), "decoder_self": np.array([[True, False]]),
               "cross": np.array([[True, True]])}
    scores = {"encoder_self": np.array([[0.9, 0.2]]), "decoder_self": np.array([[0.5, np.nan]]),
              "cross": np.array([[0.5, 0.95]])}
    assert select_heads(scores, keep=3) == {"encoder_self": [[0]], "decoder_self": [[0]], "cross": [[1]]}
    assert select_heads(scores, keep=0) == {k: [[]] for k in present}  # every attention left with its bias
    assert select_heads(scores, threshold=0.5) == {"encoder_self": [[0]], "decoder_self": [[0]], "cross": [[0, 1]]}
    no_cross = {k: v.copy() for k, v in present.items()}
    no_cross["cross"][0, 1] = False  # switched off by the run's head_mask: never kept
    assert select_heads(scores, keep=2, eligible=no_cross)["cross"] == [[]]
    with pytest.raises(ValueError, match="exactly one"):
        select_heads(scores)


def test_init_from_merges_weights_and_keeps_fresh_gates():
    from model.config import ModelConfig

    cfg = ModelConfig(d_model=16, num_heads=2, ffn_dim=32, num_layers=1, max_len=16)
    plain = nnx.state(Transformer(cfg, 20, rngs=nnx.Rngs(1)))
    gated = nnx.state(Transformer(cfg.__class__(**{**cfg.__dict__, "head_gates": "concrete"}), 20, rngs=nnx.Rngs(2)))
    merged = merge_params(gated, plain, "RUN")
    flat = lambda t: {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
    m, p, g = flat(merged), flat(plain), flat(gated)
    assert set(m) == set(g) and len(set(g) - set(p)) == 3  # one gate per attention
    for name, value in m.items():
        np.testing.assert_array_equal(value, p[name] if name in p else g[name])
    with pytest.raises(SystemExit, match="has parameters this model lacks"):
        merge_params(plain, gated, "RUN")
    wider = nnx.state(Transformer(cfg.__class__(**{**cfg.__dict__, "ffn_dim": 64}), 20, rngs=nnx.Rngs(1)))
    with pytest.raises(SystemExit, match=r"ffn.*is \(64, 16\) in RUN and \(32, 16\) here"):
        merge_params(plain, wider, "RUN")

"""Head gates, importance, pruning and the `python -m train.heads` command (tiny models)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from data.batch import Batch
from data.config import EOS_ID
from model.config import ConfigError, ModelConfig
from model.decoding import GatedModel, greedy_decode
from model.transformer import Transformer
from tests.conftest import run_cli
from train.analysis.head_importance import (
    all_on,
    gate_shapes,
    gates_without,
    head_importance,
    make_gate_grad_fn,
    make_loss_fn,
    normalize_per_layer,
    prunable_share,
    pruning_order,
    pruning_steps,
)
from train.analysis.pruning_orders import gate_order, random_order, summarize, with_shares

V = 40
# GELU, not ReLU: the loss is then smooth in the gates, so central differences converge.
CFG = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, num_encoder_layers=2, num_decoder_layers=1,
                  dropout=0.1, max_len=32, activation="gelu")
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny shapes: compiling dominates


def fast_jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


def build(cfg: ModelConfig = CFG):
    """(graphdef, params), initialised under one jit (eager init dispatches op by op: slow)."""
    make = lambda: Transformer(cfg, V, rngs=nnx.Rngs(params=0))
    return nnx.graphdef(nnx.eval_shape(make)), fast_jit(lambda: nnx.state(make()))()


@pytest.fixture(scope="module")
def split_model():
    return build()


def example_batch(lengths: list[tuple[int, int]], size: int = 8, seed: int = 0) -> Batch:
    """One example per row (ids end in EOS); rows past len(lengths) are all-PAD filler."""
    rng = np.random.default_rng(seed)
    srcs, tgts = [], []
    for s, t in lengths:
        srcs.append(list(rng.integers(4, V, s - 1)) + [EOS_ID])
        tgts.append(list(rng.integers(4, V, t - 1)) + [EOS_ID])
    return Batch.one_per_row(srcs, tgts, S=size, T=size, rows=len(lengths) + 1)


def test_a_zero_gate_removes_exactly_that_head(split_model):
    """Gate 0 on one head == that head's slice of the output projection deleted (all gates 1)."""
    graphdef, params = split_model
    batch = example_batch([(6, 5), (8, 8)])
    forward = fast_jit(lambda p, g: nnx.merge(graphdef, p)(batch.src, batch.tgt_in, head_gates=g))
    shapes = gate_shapes(CFG)
    full = forward(params, all_on(shapes))
    k = CFG.resolved_head_dim
    for kind, layer, head in [("encoder_self", 1, 0), ("decoder_self", 0, 1), ("cross", 0, 0)]:
        gated = forward(params, gates_without(shapes, [(kind, layer, head)]))
        model = nnx.merge(graphdef, params)
        block = model.encoder_layers[layer] if kind == "encoder_self" else model.decoder_layers[layer]
        attn = block.cross_attn if kind == "cross" else block.self_attn
        attn.out.kernel.value = attn.out.kernel.value.at[head * k:(head + 1) * k].set(0.0)
        deleted = forward(nnx.state(model), all_on(shapes))
        np.testing.assert_allclose(gated, deleted, atol=1e-5, rtol=1e-5)
        assert not np.allclose(gated, full, atol=1e-3), kind  # the head did contribute


def test_head_mask_override_sets_the_default_gates():
    from train.config import compose, to_config

    mask = "{cross:[[1,0,1,1],[0,1,1,1]]}"
    cfg = to_config(compose(["model=tiny", f"model.head_mask={mask}"])).model
    assert cfg.head_mask == {"cross": [[1, 0, 1, 1], [0, 1, 1, 1]]}
    # What the model uses when no gates are passed (tests/test_model.py checks that it acts so).
    model = nnx.eval_shape(lambda: Transformer(cfg, V, rngs=nnx.Rngs(params=0)))
    assert dict(model.default_gates) == {"cross": ((1.0, 0.0, 1.0, 1.0), (0.0, 1.0, 1.0, 1.0))}
    with pytest.raises(ConfigError, match="head_mask.cross"):
        to_config(compose(["model=tiny", "model.head_mask={cross:[[1,0]]}"]))


def test_importance_matches_finite_differences(split_model):
    """Per-sentence gate gradients == central differences of each sentence's summed NLL, and
    importance = sum over sentences of |gradient| / tokens, normalised per layer."""
    graphdef, params = split_model
    batch = example_batch([(6, 5), (8, 8), (3, 4)])
    gates = all_on(gate_shapes(CFG))
    grad_fn = fast_jit(make_gate_grad_fn(graphdef))
    nll, tokens, grads = grad_fn(params, gates, batch)
    loss_fn = fast_jit(make_loss_fn(graphdef))
    np.testing.assert_allclose(nll, loss_fn(params, gates, batch)[0], rtol=1e-5)
    assert float(tokens[-1]) == 0 and float(nll[-1]) == 0  # the filler row counts for nothing

    eps = 3e-2  # float32 losses: smaller steps drown in rounding
    for kind, (layers, heads) in gate_shapes(CFG).items():
        for layer in range(layers):
            for head in range(heads):
                up, down = all_on(gate_shapes(CFG)), all_on(gate_shapes(CFG))
                up[kind][layer, head] += eps
                down[kind][layer, head] -= eps
                fd = (np.asarray(loss_fn(params, up, batch)[0], np.float64)
                      - np.asarray(loss_fn(params, down, batch)[0], np.float64)) / (2 * eps)
                np.testing.assert_allclose(grads[kind][:, layer, head], fd, rtol=1e-2, atol=1e-3)

    imp = head_importance(grad_fn, params, gates, [batch, batch])
    for kind in gates:
        want = 2 * np.abs(np.asarray(grads[kind])).sum(axis=0) / (2 * float(np.sum(tokens)))
        np.testing.assert_allclose(imp["raw"][kind], want, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(imp["normalized"][kind], axis=-1), 1.0, rtol=1e-5)
    assert imp["sentences"] == 6 and imp["tokens"] == 2 * 17


def test_pruning_helpers():
    assert pruning_steps(36) == [0, 4, 7, 11, 14, 18, 22, 25, 29, 32, 36]
    assert pruning_steps(4) == [0, 1, 2, 3, 4]  # rounding collapses repeated counts
    norm = {"encoder_self": np.array([[0.3, 0.9]]), "cross": np.array([[0.1, 0.95]])}
    assert pruning_order(norm) == [("cross", 0, 0), ("encoder_self", 0, 0), ("encoder_self", 0, 1),
                                   ("cross", 0, 1)]
    np.testing.assert_allclose(normalize_per_layer(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0, 0]])
    curve = [{"share": s, "bleu": b} for s, b in [(0, 20.0), (0.1, 19.5), (0.2, 19.2), (0.3, 18.5), (0.4, 19.9)]]
    assert prunable_share(curve) == 0.2  # 0.3 loses 1.5; the recovery at 0.4 does not count


def test_pruning_order_helpers():
    heads = [("encoder_self", 0, 0), ("encoder_self", 0, 1), ("cross", 0, 0), ("cross", 0, 1)]
    first, again, other = random_order(heads, 0), random_order(heads, 0), random_order(heads, 1)
    assert first == again and sorted(first) == sorted(heads) and len({tuple(random_order(heads, s)) for s in range(8)}) > 1
    assert other != first or random_order(heads, 2) != first
    p_open = {"encoder_self": [[0.9, 0.1]], "cross": [[0.5, 0.1]]}
    assert gate_order(p_open, heads) == [("encoder_self", 0, 1), ("cross", 0, 1), ("cross", 0, 0),
                                         ("encoder_self", 0, 0)]  # ties: encoder self before cross
    assert with_shares([0, 4, 8], 8) == [0, 2, 4, 6, 8]
    c1 = [{"heads_off": k, "share": k / 4, "bleu": b} for k, b in zip(range(5), [20.0, 19.5, 18.0, 10.0, 1.0])]
    c2 = [{"heads_off": k, "share": k / 4, "bleu": b} for k, b in zip(range(5), [20.0, 18.5, 16.0, 6.0, 1.0])]
    s = summarize([c1, c2], "bleu")
    assert s["seeds"] == 2 and s["mean"] == [20.0, 19.0, 17.0, 8.0, 1.0]
    assert s["sd"][0] == 0 and s["sd"][2] == pytest.approx(np.std([18.0, 16.0], ddof=1), abs=1e-3)
    assert s["at_shares"]["50%"] == {"mean": 17.0, "sd": pytest.approx(1.414, abs=1e-3)}
    assert s["prunable_share_1bleu"] == {"mean": 0.125, "sd": pytest.approx(0.1768, abs=1e-4)}  # 25% and 0%
    assert summarize([c1], "bleu")["sd"] == [0.0] * 5
    with pytest.raises(ValueError):
        summarize([c1, c1[:3]], "bleu")


def test_gates_reach_the_decoder(split_model):
    """Greedy (KV-cached) decoding of a GatedModel == a model built with model.head_mask."""
    graphdef, params = split_model
    shapes = gate_shapes(CFG)
    gates = gates_without(shapes, [("encoder_self", 0, 0), ("decoder_self", 0, 1), ("cross", 0, 1)])
    src = example_batch([(6, 2), (4, 2)]).src
    kw = dict(max_len=6, max_len_a=1.0, max_len_b=2)
    gated = fast_jit(lambda p, g: greedy_decode(GatedModel(nnx.merge(graphdef, p), g), src, **kw))
    masked_cfg = ModelConfig(**{**CFG.__dict__, "head_mask": {k: v.tolist() for k, v in gates.items()}})
    masked_graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(masked_cfg, V, rngs=nnx.Rngs(0))))
    masked = fast_jit(lambda p: greedy_decode(nnx.merge(masked_graphdef, p), src, **kw))
    tokens = gated(params, gates)
    np.testing.assert_array_equal(tokens, masked(params))
    assert not np.array_equal(tokens, gated(params, all_on(shapes)))  # the gates did change the output


# ---- end to end ------------------------------------------------------------------------------

EN = [f"w{i}" for i in range(16)]


def toy_corpus(folder: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """A word-for-word toy language pair with identity gold alignments, laid out like the
    embedded corpus ({split}.jsonl.gz with translation.en/es and alignment)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(n):
                words = list(rng.choice(EN, int(rng.integers(3, 7))))
                row = {"id": f"{split} {i}", "translation": {"en": " ".join(words),
                       "es": " ".join("x" + w for w in words)},
                       "alignment": [[j, j] for j in range(len(words))]}
                f.write(json.dumps(row) + "\n")


# Compiling dominates tiny runs; XLA's cheapest CPU pipeline roughly halves it (as tests/test_evaluate.py).
FAST_XLA = {"XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """A tiny model trained for a few steps by `python -m train` on a corpus with gold links."""
    tmp = tmp_path_factory.mktemp("heads")
    toy_corpus(tmp / "corpus", {"train": 200, "validation": 12})
    run_dir = tmp / "run"
    proc = run_cli([
        "-m", "train", "model=tiny", "model.d_model=32", "model.num_heads=2", "model.ffn_dim=64",
        "model.num_layers=1", "model.max_len=16", f"data.path={tmp / 'corpus'}", f"data.cache_dir={tmp / 'cache'}",
        "data.test_split=null", "data.vocab_size=100", "data.max_source_len=16", "data.max_target_len=16",
        "data.max_tokens=256", "train.max_steps=10", "train.eval_every=5",
        "train.log_every=10", "train.checkpoint_every=0", "train.val_bleu_examples=4", "train.probe_examples=2",
        "train.progress=false", "train.compilation_cache=null", "decode.batch_size=8", "logger=jsonl",
        f"hydra.run.dir={run_dir}"], env=FAST_XLA)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_heads_command_end_to_end(short_run):
    proc = run_cli(["-m", "train.heads", f"run_dir={short_run}", "batch_rows=8", "prune_step=0.5"], env=FAST_XLA)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    printed = proc.stdout
    out = short_run / "heads"
    for name in ("heads.json", "importance.png", "pruning_curve.png", "pruning_orders.png", "alignment.png",
                 "summary.md"):
        assert (out / name).is_file(), name
    r = json.loads((out / "heads.json").read_text())
    total = (1 + 1 + 1) * 2  # 1 encoder + 1 decoder layer, 2 heads; cross counts too
    assert r["model"]["heads_total"] == total and len(r["pruning_order"]) == total
    assert [p["heads_off"] for p in r["pruning_curve"]] == [0, 2, 3, 4, 6]  # the 0.5 grid + 25/50/75% off
    orders = r["pruning_orders"]
    assert set(orders) == {"importance", "random"}  # no gates in this run: no gate order
    assert orders["random"]["seeds"] == 3 and [s["heads_off"] for s in orders["random"]["steps"]] == [0, 2, 3, 4, 6]
    assert orders["importance"]["mean"] == [p["bleu"] for p in r["pruning_curve"]]
    for o in orders.values():  # every order starts from the same model and ends with every head off
        assert o["mean"][0] == r["pruning_curve"][0]["bleu"] and o["sd"][0] == 0
        assert o["mean"][-1] == pytest.approx(r["pruning_curve"][-1]["bleu"], abs=1e-3) and o["sd"][-1] == 0
        assert set(o["at_shares"]) == {"25%", "50%", "75%"}
    assert r["pruning_curve"][-1]["val_loss"] > r["pruning_curve"][0]["val_loss"]  # all heads off hurts
    assert 0.0 <= r["prunable_share_1bleu"] <= 1.0
    assert np.shape(r["importance"]["cross"]["normalized"]) == (1, 2)
    a = r["alignment"]
    assert a["examples"] == 12 and a["gold_links"] > 0
    assert np.shape(a["output_rows"]["heads"]["f1"]) == (1, 2)
    logged = [json.loads(line) for line in (short_run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/align_f1" in m for m in logged)  # the training loop's validation hook
    assert r["best_alignment_f1"] == a["output_rows"]["best_head"]["f1"]
    assert set(a["diagonal_baseline"]) == set(a["argmax_ceiling"]) == {"precision", "recall", "f1", "aer"}
    assert "## Pruning" in printed and "## Alignment" in printed and "of the heads can be switched off" in printed
    assert "## Pruning orders" in printed and "| random | 3 |" in printed


@pytest.mark.slow
def test_attention_figures_command_end_to_end(short_run, tmp_path):
    """docs/attention.md's pictures come from this command; it must keep running on a real run."""
    out = tmp_path / "figures"
    proc = run_cli(["-m", "train.attention_figures", f"run_dir={short_run}", f"out={out}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("step 10: alignment-like cross-attention head: layer 0 head ")
    for name in ("cross_attention.png", "positional_head.png", "entropy_over_training.png", "figures.json"):
        assert (out / name).is_file(), name
    r = json.loads((out / "figures.json").read_text())
    assert r["probe_steps"] == [0, 5, 10] and r["step"] == 10  # step 0: the maps at initialisation
    assert set(r["entropy"]["cross"]) == {"0", "5", "10"} and len(r["entropy"]["cross"]["10"][0]) == 2  # 1 layer x 2 heads

    bad = run_cli(["-m", "train.attention_figures", f"run_dir={short_run}", "step=7"])
    assert bad.returncode == 2 and "step=7 has no probe" in bad.stderr and "[0, 5, 10]" in bad.stderr

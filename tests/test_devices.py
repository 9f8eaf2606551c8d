"""`python -m train`'s own device path on 4 simulated CPU devices (XLA's host platform split in 4).

Each case runs the real Trainer (set-up, prefetch thread, jitted step, hooks) in a subprocess,
with the train step wrapped to record what it really receives, then reads the compiled step.
Plain data parallelism and FSDP must give the losses of one device; every device must hold a
quarter of each batch; the step must reduce across devices; under FSDP every large parameter
must be split in four.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_sweep import TINY, write_corpus

SCRIPT = r"""
import json, sys
import jax
from train.config import compose, to_config
from train.engine.trainer import Trainer

overrides, run_dir = json.loads(sys.argv[1]), sys.argv[2]
trainer = Trainer(to_config(compose(overrides)), run_dir)
trainer.setup()
seen = {}
step = trainer.train_step

def recording_step(state, batch, key):
    if not seen:  # the batch as the prefetch thread placed it
        seen["src_shards"] = [list(s.data.shape) for s in batch.src.addressable_shards]
        seen["src_shape"] = list(batch.src.shape)
        seen["hlo"] = step.lower(state, batch, key).compile().as_text()
    return step(state, batch, key)

trainer.train_step = recording_step
trainer.train_step._cache_size = step._cache_size
summary = trainer.fit()
params = jax.tree_util.tree_leaves(trainer.state.params)
print(json.dumps({
    "devices": jax.device_count(),
    "src_shards": seen["src_shards"], "src_shape": seen["src_shape"],
    "all_reduce": "all-reduce" in seen["hlo"] or "reduce-scatter" in seen["hlo"],
    "large_params": sum(p.size >= 4096 for p in params),
    "quartered_params": sum(p.size >= 4096 and s.data.size * 4 == p.size for p in params
                            for s in p.addressable_shards[:1]),
    "val_loss": summary["val/loss"],
}))
"""


def overrides(tmp: Path, **extra: str) -> list[str]:
    args = {"data": "local", "data.path": str(tmp / "corpus"), "data.cache_dir": str(tmp / "cache"),
            "data.vocab_size": "100", "data.max_source_len": "16", "data.max_target_len": "16",
            "data.max_tokens": "256", "train.max_steps": "6", "train.log_every": "1", "train.eval_every": "6",
            "train.checkpoint_every": "0", "train.val_bleu_examples": "4", "train.probe_examples": "2",
            "train.progress": "false", "train.compilation_cache": "null", "model.dropout": "0.1",
            "model.d_model": "64", "model.ffn_dim": "128", **extra}  # wide enough that FSDP splits kernels
    return TINY + [f"{k}={v}" for k, v in args.items()]


def losses(run_dir: Path) -> dict[int, float]:
    rows = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("devices")
    write_corpus(tmp / "corpus")
    out = {}
    for name, devices, extra in (("one", 1, {}), ("dp", 4, {}), ("fsdp", 4, {"train.fsdp": "true"})):
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        proc = run_cli(["-c", SCRIPT, json.dumps(overrides(tmp, **extra)), str(tmp / name)], env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1]) | {"losses": losses(tmp / name)}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dp", "fsdp"])
def test_same_losses_as_one_device(runs, name):
    one, many = runs["one"], runs[name]
    assert many["devices"] == 4 and one["devices"] == 1
    assert sorted(many["losses"]) == list(range(1, 7))
    for step, loss in one["losses"].items():
        assert many["losses"][step] == pytest.approx(loss, rel=1e-4, abs=1e-5), step
    assert many["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dp", "fsdp"])
def test_each_device_holds_a_quarter_of_each_batch(runs, name):
    rows, length = runs[name]["src_shape"]
    assert runs[name]["src_shards"] == [[rows // 4, length]] * 4
    assert runs["one"]["src_shards"] == [[rows, length]]


@pytest.mark.slow
def test_the_compiled_step_reduces_across_devices(runs):
    assert runs["dp"]["all_reduce"] and runs["fsdp"]["all_reduce"]
    assert not runs["one"]["all_reduce"]


@pytest.mark.slow
def test_fsdp_splits_every_large_parameter(runs):
    fsdp, dp = runs["fsdp"], runs["dp"]
    assert fsdp["large_params"] > 0 and fsdp["quartered_params"] == fsdp["large_params"]
    assert dp["quartered_params"] == 0  # data parallelism replicates them


def test_mesh_axes_follow_the_config():
    from train.config import TrainConfig
    from train.engine.sharding import make_mesh

    mesh = make_mesh(TrainConfig())
    assert mesh.axis_names == ("data", "fsdp") and mesh.shape["fsdp"] == 1
    assert dict(make_mesh(TrainConfig(fsdp=True)).shape) == {"data": 1, "fsdp": mesh.size}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

"""Every config composes into typed, validated objects; bad overrides fail early and clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from model.config import ConfigError
from tests.conftest import REPO_ROOT, run_cli
from train.config import compose, to_config

CONFIG_DIR = REPO_ROOT / "configs"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "data", "optim", "train", "decode", "logger"])
def test_every_group_option_composes(group):
    for option in group_options(group):
        overrides = [f"{group}={option}"]
        if group == "data" and option == "local":
            overrides.append("data.path=/tmp/some-folder")
        cfg = to_config(compose(overrides))
        assert getattr(cfg, group) is not None


def test_experiments_compose():
    for option in group_options("experiment"):
        to_config(compose([f"experiment={option}"]))


def test_defaults_are_the_embedded_corpus_and_compact_model():
    cfg = to_config(compose())
    assert cfg.data.name == "bible_en_es" and cfg.data.source == "embedded"
    assert (cfg.model.d_model, cfg.model.num_heads, cfg.model.encoder_layers) == (128, 4, 3)


def test_head_semantics():
    derived = to_config(compose(["model=small", "model.num_heads=8"])).model
    assert derived.resolved_head_dim == 32 and derived.attention_width == 256
    fixed = to_config(compose(["model=small", "model.num_heads=8", "model.head_dim=64"])).model
    assert fixed.resolved_head_dim == 64 and fixed.attention_width == 512
    both = to_config(compose(["model.num_layers=2"])).model
    assert both.encoder_layers == both.decoder_layers == 2


def test_indivisible_heads_names_both_values():
    with pytest.raises(ConfigError, match=r"num_heads=3.*d_model=128"):
        to_config(compose(["model.num_heads=3"]))


def test_unknown_key_and_wrong_type_fail_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose(["model.nmu_heads=4"])
    with pytest.raises(ConfigCompositionException):
        compose(["model.num_heads=four"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dropout=1.5", "model.dropout"),
        ("model.norm=middle", "model.norm"),
        ("optim.lr=-1", "optim.lr"),
        ("train.max_steps=0", "train.max_steps"),
        ("data.max_tokens=10", "data.max_tokens"),
        ("logger.wandb=sometimes", "logger.wandb"),
    ],
)
def test_cross_field_checks(override, message):
    with pytest.raises(ConfigError, match=message):
        to_config(compose([override]))


def test_cli_bad_heads_fails_before_any_work(tmp_path):
    result = run_cli(["-m", "train", "model.num_heads=3", f"hydra.run.dir={tmp_path}/run"], timeout=120)
    assert result.returncode != 0
    assert "num_heads=3" in result.stderr and "d_model=128" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(tmp_path) / "run" / "metrics.jsonl").exists()


def test_cli_unknown_key_is_hydras_error(tmp_path):
    result = run_cli(["-m", "train", "model.nmu_heads=4", f"hydra.run.dir={tmp_path}/run"], timeout=120)
    assert result.returncode != 0
    assert "nmu_heads" in result.stderr

"""The loop's one extension point: hooks run when their schedule says, and a hook added from
outside runs inside a real training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_sweep import TINY, write_corpus
from train.engine.hooks import Hook, Hooks


def test_schedule():
    every3 = Hook(lambda s: None, every=3)
    assert [s for s in range(1, 11) if every3.due(s, 10)] == [3, 6, 9]
    with_last = Hook(lambda s: None, every=4, at_last=True)
    assert [s for s in range(1, 11) if with_last.due(s, 10)] == [4, 8, 10]
    not_last = Hook(lambda s: None, every=5, at_last=False)
    assert [s for s in range(1, 11) if not_last.due(s, 10)] == [5]
    assert [s for s in range(1, 4) if Hook(lambda s: None, every=0).due(s, 3)] == []


def test_hooks_run_in_order_and_after_saves():
    calls: list = []
    hooks = Hooks(last_step=4)
    hooks.add(lambda s: calls.append(("a", s)), every=2)
    hooks.add(lambda s: calls.append(("b", s)), every=1, at_last=False)
    hooks.on_save(lambda s: calls.append(("saved", s)))
    for step in range(1, 5):
        hooks.after_step(step)
    hooks.after_save(4)
    assert calls == [("b", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 4), ("saved", 4)]


@pytest.mark.slow
def test_a_users_hook_runs_in_a_real_run(tmp_path: Path):
    from train.config import compose, to_config
    from train.engine.trainer import Trainer

    write_corpus(tmp_path / "corpus")
    cfg = to_config(compose([*TINY, "data=local", f"data.path={tmp_path / 'corpus'}",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.vocab_size=100",
                             "data.max_source_len=16", "data.max_target_len=16", "data.max_tokens=256",
                             "train.max_steps=6", "train.log_every=2", "train.eval_every=4",
                             "train.checkpoint_every=0", "train.val_bleu_examples=4", "train.probe_examples=0",
                             "train.progress=false", "train.compilation_cache=null"]))
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.setup()
    seen: list[tuple[int, int]] = []
    trainer.hooks.add(lambda step: seen.append((step, int(trainer.state.step))), every=3)
    summary = trainer.fit()
    assert seen == [(3, 3), (6, 6)]  # after the step's update, with the state that step produced
    assert summary["steps"] == 6
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in logged if s in (2, 4, 6)]  # the built-in hooks ran too

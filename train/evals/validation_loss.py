"""Teacher-forced loss, perplexity and accuracy over a whole split, in packed batches."""

from __future__ import annotations

from typing import Any

import datasets
import jax
import jax.numpy as jnp
import numpy as np

from data.config import DataConfig
from data.packing import PackedBatches
from train.engine.sharding import put_batch, to_host
from train.engine.step import make_eval_step
from train.evals.base import split_key


class ValidationLoss:
    """Evaluator: `{split}/loss`, `/ppl`, `/accuracy` (no label smoothing, no dropout)."""

    def __init__(self, graphdef: Any, dataset: datasets.Dataset, data_cfg: DataConfig, batch_sharding: Any,
                 split: str = "validation", eval_step: Any = None):
        """eval_step: a jitted make_eval_step(graphdef) to share (one compile for several splits)."""
        self.dataset, self.data_cfg, self.sharding, self.prefix = dataset, data_cfg, batch_sharding, split_key(split)
        self.step = eval_step or jax.jit(make_eval_step(graphdef))

    def __call__(self, params: Any, final: bool = False) -> dict[str, float]:
        sums = None
        for batch in PackedBatches(self.dataset, self.data_cfg, seed=0, shuffle=False, repeat=False,
                                   process_index=jax.process_index(), process_count=jax.process_count()):
            out = self.step(params, put_batch(batch, self.sharding))  # this process's rows of the batch
            sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
        sums = to_host(sums)
        tokens = max(float(sums["tokens"]), 1.0)
        nll = float(sums["nll_sum"]) / tokens
        return {f"{self.prefix}/loss": nll, f"{self.prefix}/ppl": float(np.exp(min(nll, 50.0))),
                f"{self.prefix}/accuracy": float(sums["correct_sum"]) / tokens}

    def compiles(self) -> int:
        return self.step._cache_size()

"""`python -m train [overrides]`: train one run (or a sweep with -m). See configs/config.yaml."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from model.config import ConfigError
from train.config import CONFIG_DIR, register_configs, to_config

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Train; return the final validation metric (what sweepers such as Optuna optimise)."""
    from data.errors import (
        DataError,  # imported late: a bad config fails before heavy imports
    )
    from train.engine.process_setup import configure_process

    configure_process()  # malloc settings and XLA options, before JAX starts (docs/performance.md)

    try:
        config = to_config(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode.name == "MULTIRUN" else None

    from train.engine.trainer import run
    from train.evals.scores import primary_metric

    try:
        summary = run(config, run_dir, group=group)
    except DataError as e:
        if group is not None:  # a sweep job: raise, so Hydra records this job as failed (sweep callback)
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    metric = primary_metric(config.data.task)
    import jax  # already started by the run

    if jax.process_index() == 0:  # the other processes of a multi-process run print nothing
        print(f"test {metric}: {summary.get(f'test/{metric}', 'n/a')}  "
              f"val {metric}: {summary.get(f'val/{metric}')}  run dir: {run_dir}")
    return float(summary.get(f"val/{metric}") or 0.0)


if __name__ == "__main__":
    main()

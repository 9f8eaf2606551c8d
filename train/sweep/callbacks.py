"""Hydra callbacks for sweeps (`python -m train -m ...`), selected in configs/config.yaml.

`SweepCallback.on_multirun_start` runs once, on the machine that launches the sweep, before the
sweeper or the launcher is created and before any job starts:

1. It expands the grid: the command line's sweep overrides plus `hydra.sweeper.params` (what the
   basic sweeper would run; for Optuna, every `choice`/`range` value and both ends of each
   `interval`), composes every point's config exactly as a job will, and runs `to_config` on it.
   Hydra composes each job lazily, so without this a bad point would fail after the good ones
   before it had trained. Any invalid point stops the sweep: all of them are listed, no job runs.
2. It prepares each distinct data config once (tokenizer trained, splits tokenized and cached), so
   that parallel jobs only read the cache (concurrent first-time writes to one HF datasets cache can corrupt it).

A callback rather than a sweeper plugin because it works unchanged with every sweeper (basic,
Optuna) and every launcher (basic, submitit local, SLURM), and needs no plugin package.

`on_job_end` writes `job_status.json` into each job's directory (finished or failed, with the
error), so that `python -m train.report` can tell a failed run from an unfinished one. A job that
is killed or preempted never gets there: it has no status file, and the report says "unfinished".
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"  # in each job's directory
SWEEP_FILE = "sweep.json"  # in the multirun directory


def sweep_arguments(config: DictConfig) -> list[str]:
    """The overrides a sweeper expands: `hydra.sweeper.params` first, then the command line's."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)


def expand_grid(arguments: list[str], config_loader: Any = None) -> tuple[list[list[str]], list[str], bool]:
    """All points of a sweep: (points as override lists, the swept keys, exact).

    Discrete sweeps (`a=1,2`, `choice(...)`, `range(...)`) expand like Hydra's BasicSweeper does
    (a later override of the same key replaces an earlier one, in its first position). A continuous
    `interval(lo, hi)` (Optuna) contributes its two ends, with `exact=False`.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    parser = OverridesParser.create(config_loader=config_loader)
    choices: dict[str, list[str]] = {}
    swept: list[str] = []
    exact = True
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
            swept = [k for k in swept if k != key]  # a fixed value on the command line wins
            continue
        if override.is_discrete_sweep():
            values = list(override.sweep_string_iterator())
        else:
            sweep = override.value()
            if not isinstance(sweep, IntervalSweep):
                raise ValueError(f"cannot expand the sweep {override.input_line!r}")
            as_int = "int" in sweep.tags
            values = [str(int(v)) if as_int else repr(float(v)) for v in (sweep.start, sweep.end)]
            exact = False
        choices[key] = [f"{key}={v}" for v in values]
        if key not in swept:
            swept.append(key)
    points = [list(p) for p in itertools.product(*choices.values())]
    return points, swept, exact


def compose_point(config_loader: Any, master: DictConfig, overrides: list[str]):
    """Compose one job's config the way the launcher will, and convert it (raises when invalid)."""
    from hydra.core.hydra_config import HydraConfig

    from train.config import to_config

    job_cfg = config_loader.load_sweep_config(master, list(overrides))
    task_cfg = copy.deepcopy(job_cfg)  # what the task function receives (hydra.core.utils.run_job)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job_cfg)  # so that `${hydra:...}` resolves as in the job
    try:
        return to_config(task_cfg)
    finally:
        HydraConfig.instance().cfg = previous


def describe(error: BaseException) -> str:
    """One line: the error and, for Hydra's composition errors, the cause that names the key."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines) or type(error).__name__
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text


def validate_grid(master: DictConfig, config_loader: Any, max_points: int = 2000) -> list:
    """Compose and check every point; exit with status 2, listing the invalid ones, if any is bad.

    Returns the valid points' Config objects, and records the sweep in MULTIRUN_DIR/sweep.json
    (swept keys, and the points when the basic sweeper runs exactly these) for the report.
    Grids larger than `max_points` (an Optuna space of many choices) are checked on a fixed
    random sample of that size.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from model.config import ConfigError

    points, swept, exact = expand_grid(sweep_arguments(master), config_loader)
    checked = points
    if len(points) > max_points:
        checked = random.Random(0).sample(points, max_points)
        log.warning("sweep: %d points; checking a random %d of them", len(points), max_points)
    tic = time.perf_counter()
    configs, failures = [], {}  # error message -> the points that raise it
    for point in checked:
        try:
            configs.append(compose_point(config_loader, master, point))
        except (ConfigError, HydraException, OmegaConfBaseException, ValueError, TypeError) as e:
            failures.setdefault(describe(e), []).append([o for o in point if o.split("=", 1)[0] in swept])
    if failures:
        bad = sum(len(v) for v in failures.values())
        lines = []
        for message, group in failures.items():
            # Name the swept values every point of the group shares: usually the culprit.
            shared = [o for o in group[0] if all(o in p for p in group)] or group[0]
            count = f" ({len(group)} points)" if len(group) > 1 else ""
            lines.append(f"  {' '.join(shared)}{count}: {message}")
        what = "points" if exact else "points (interval ends included)"
        print(f"error: {bad} of {len(checked)} sweep {what} are invalid; no job was started:\n"
              + "\n".join(lines), file=sys.stderr)
        sys.exit(2)
    basic = str(master.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper")
    record = {"swept": swept, "sweeper": str(master.hydra.sweeper.get("_target_", "")),
              "points": points if basic and exact else None, "command": sys.argv}
    sweep_dir = Path(str(master.hydra.sweep.dir))
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as e:  # an unwritable sweep folder is reported by train.engine.faults.OutputDirCheck
        log.warning("could not write %s: %s", sweep_dir / SWEEP_FILE, e)
    log.info("sweep: %d points valid (%s%.1f s)", len(checked), "" if exact else "interval ends; ",
             time.perf_counter() - tic)
    return configs


def prepare_data_once(configs: list) -> None:
    """Tokenizer and tokenized splits for each distinct data config, before any job reads them."""
    from data.errors import DataError
    from data.pipeline import prepare
    from train.config import REPO_ROOT

    distinct = {}
    for cfg in configs:
        distinct.setdefault(repr(cfg.data), cfg.data)
    for data_cfg in distinct.values():
        tic = time.perf_counter()
        try:
            prepared = prepare(data_cfg, REPO_ROOT)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        log.info("sweep: data %s prepared once for all jobs in %.1f s: %s", data_cfg.name,
                 time.perf_counter() - tic, prepared.cache_dir)


def name_job_dirs_by_swept_keys(master: DictConfig, config_loader: Any = None) -> None:
    """Leave the overrides that every job shares out of `hydra.job.override_dirname`.

    The default job subdir, `${hydra.job.num}_${hydra.job.override_dirname}`, otherwise spells
    out every override of the command line: with a few fixed ones (data.path=..., ...) it passes
    the file-name limit and the first job fails. Each job's config is recomposed from the master
    config's `hydra.overrides.hydra` (ConfigLoader.load_sweep_config, with every launcher), so
    one extra hydra override there reaches all jobs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(sweep_arguments(master))
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    fixed = [o.key_or_group for o in parsed if o.key_or_group not in swept]
    existing = list(master.hydra.job.config.override_dirname.exclude_keys or [])
    keys = existing + [k for k in dict.fromkeys(fixed) if k not in existing]
    if not swept or keys == existing:
        return
    quoted = ",".join("'" + k.replace("\\", "\\\\").replace("'", "\\'") + "'" for k in keys)
    with read_write(master.hydra):
        master.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{quoted}]")


class SweepCallback(Callback):
    """Validate the grid and prepare data before a multirun; record each job's outcome."""

    def __init__(self, validate: bool = True, prepare_data: bool = True, max_points: int = 2000) -> None:
        """validate=false skips the whole up-front step (and so the data preparation too);
        prepare_data=false only skips preparing the data (hydra.callbacks.sweep.prepare_data=false)."""
        self.validate = validate
        self.prepare_data = prepare_data
        self.max_points = max_points

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.validate:
            return
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        configs = validate_grid(config, loader, self.max_points)
        name_job_dirs_by_swept_keys(config, loader)
        if self.prepare_data:
            prepare_data_once(configs)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        out = Path(str(config.hydra.runtime.output_dir))
        value = getattr(job_return, "_return_value", None)  # .return_value re-raises a job's error
        record: dict[str, Any] = {
            "status": "finished" if job_return.status == JobStatus.COMPLETED else "failed",
            "overrides": list(job_return.overrides or []),
        }
        if job_return.status == JobStatus.COMPLETED:
            record["return_value"] = value if isinstance(value, (int, float, str, type(None))) else repr(value)
        else:
            record["error"] = f"{type(value).__name__}: {value}"
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / STATUS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        except OSError as e:  # a status file must never turn a finished job into a failed one
            log.warning("could not write %s: %s", out / STATUS_FILE, e)

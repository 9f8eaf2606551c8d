"""The command-line edge of the inference and analysis commands (evaluate, translate, heads,
attention_figures): arguments are Hydra overrides (`run_dir=DIR decode.beam_size=4`) composed
against a typed schema, so an unknown key or a wrong type fails at once; decode options left
unset fall back to the run's own decode config; errors a person can fix are printed without a
traceback.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf

from train.config import CONFIG_DIR, DecodeConfig
from train.errors import RunError, first_line

T = TypeVar("T")


@dataclass
class DecodeOverrides:
    """`decode.*` on the command line; None = what the training run used (its decode config)."""

    beam_size: Optional[int] = None
    alpha: Optional[float] = None
    max_len_a: Optional[float] = None
    max_len_b: Optional[int] = None
    batch_size: Optional[int] = None


def compose_args(config_name: str, schema: type, argv: list[str], usage: str) -> DictConfig:
    """Compose configs/{config_name}.yaml (typed by `schema`) with Hydra overrides from argv."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        sys.exit(0)
    bad = [a for a in argv if a.startswith("-") or "=" not in a]
    if bad:
        fail(f"unexpected argument {bad[0]!r}: arguments are key=value overrides.\n{usage}")
    argv = [quote_string_value(a, schema) for a in argv]
    ConfigStore.instance().store(name=f"{config_name}_schema", node=schema)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=argv)
    except (HydraException, OmegaConfBaseException) as e:
        cause = f" ({first_line(e.__cause__)})" if e.__cause__ is not None else ""
        fail(f"{first_line(e)}{cause}\n{usage}")
    missing = sorted(k for k in cfg if OmegaConf.is_missing(cfg, k))
    if missing:
        fail(f"missing {', '.join(f'{k}=...' for k in missing)}\n{usage}")
    return cfg


# Characters Hydra's override grammar gives a meaning to in an unquoted value. A sweep's run
# folders are named like `3_model.num_heads=2,seed=0`, so a run_dir often holds them.
HYDRA_SPECIAL = set("=,()[]{}:'\" \t")


def quote_string_value(arg: str, schema: type) -> str:
    """`key=value` with value quoted for Hydra when `key` is a string field of `schema` and the
    value holds characters Hydra would parse (a sweep run's folder name); other arguments as given."""
    key, _, value = arg.partition("=")
    hints = typing.get_type_hints(schema)
    hint = hints.get(key)
    is_string = hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint))
    if not is_string:  # list[str] and the like keep Hydra's syntax
        return arg
    if value[:1] in ("'", '"') or value.startswith("${") or not HYDRA_SPECIAL & set(value):
        return arg
    escaped = value.replace("'", "\\'")  # a quote inside the value
    return f"{key}='{escaped}'"


def decode_config(run_decode: DecodeConfig, overrides: Any) -> DecodeConfig:
    """The run's decode config with the command line's non-null `decode.*` values on top.

    Raises ConfigError for values that cannot work (beam_size=0, ...).
    """
    given = {k: v for k, v in OmegaConf.to_container(overrides).items() if v is not None}
    return dataclasses.replace(run_decode, **given).validate()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person (no traceback) and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run_command(fn: Callable[[Any], T], args: Any) -> T:
    """Call fn(args); a RunError, DataError or ConfigError becomes `error: ...` and exit code 2."""
    from data.errors import DataError
    from model.config import ConfigError

    try:
        return fn(args)
    except (RunError, DataError, ConfigError) as e:
        fail(str(e))


"""Metric sinks: metrics.jsonl (always), TensorBoard event files, and wandb (wandb_logger.py).

Every logger takes the same calls: scalars(step, values), images(step, {name: image}),
text(tag, text), finish(summary, status); `Loggers` fans them out. An image is an (H, W, 3) uint8
array or the path of a PNG file (the probe's figures: their bytes are logged as they are, not
decoded and re-encoded). The train step is logged as its own monotonic metric (wandb's
`trainer/step`, TensorBoard's global step) so dashboards line up across resumes. Only
metrics.jsonl may stop a run when it fails; a dashboard that breaks mid-run prints one warning
and is dropped.

No secret reaches a run directory: wandb reads its API key from the environment or ~/.netrc
itself, nothing here passes it on, and config keys that look like credentials are removed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from train.config import LoggerConfig

SECRET_KEY = re.compile(r"(api_?key|token|secret|password)", re.IGNORECASE)


class JsonlLogger:
    """Appends one JSON object per log call to run_dir/metrics.jsonl: {"step": N, "train/loss": ...}."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.file = open(self.path, "a", buffering=1)  # line-buffered: a crash loses at most one line

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": int(step), **{k: _json_value(v) for k, v in values.items()}}) + "\n")

    def images(self, step: int, images: dict[str, Any]) -> None:
        pass  # PNGs live under run_dir/attention; the JSONL stays scalar

    def text(self, tag: str, text: str) -> None:
        pass

    def finish(self, summary: dict, status: str) -> None:
        self.file.close()


class TensorBoardLogger:
    """Event files under run_dir/tb via tensorboardX (no TensorFlow needed).

    At finish, the HParams summary (this run's flattened config + its final metrics) goes into the
    same event stream as the scalars, so the run directory itself is the HParams "session": point
    TensorBoard at a sweep's folder and its HParams tab shows one row per run.
    """

    def __init__(self, run_dir: Path, config: dict, resume_step: Optional[int] = None):
        from tensorboardX import SummaryWriter

        # On resume, purge events logged after the checkpoint so re-logged steps appear once.
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(logdir=str(Path(run_dir) / "tb"), flush_secs=10, purge_step=purge)
        self.config = config
        self.tags: set[str] = set()  # scalar tags written so far
        self.last_step = 0
        self.writer.add_text("config", _markdown_yaml(config), 0)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            if _is_number(value):
                self.writer.add_scalar(key, float(value), int(step))
                self.tags.add(key)
        self.last_step = max(self.last_step, int(step))

    def images(self, step: int, images: dict[str, Any]) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        for key, image in images.items():
            if isinstance(image, (str, Path)):  # a PNG file: its bytes go into the event as they are
                with Image.open(image) as im:
                    width, height = im.size
                png = Summary.Image(height=height, width=width, colorspace=3,
                                    encoded_image_string=Path(image).read_bytes())
                self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=key, image=png)]), int(step))
            else:  # (H, W, 3 or 4) uint8
                self.writer.add_image(key, np.asarray(image)[..., :3], int(step), dataformats="HWC")
        self.writer.flush()  # images come at validation: show them now, not in flush_secs

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, 0)

    def finish(self, summary: dict, status: str) -> None:
        from tensorboardX.summary import hparams

        # Final figures that were never logged as scalars (test/*, params, wall_s) are written at the
        # last step, so that each metric of the HParams table names a real scalar series of this run.
        metrics = {}
        step = max(self.last_step, int(summary.get("steps") or 0))
        for key, value in summary.items():
            if not _is_number(value) or isinstance(value, bool):
                continue
            tag = key if "/" in key else f"summary/{key}"
            if tag not in self.tags:
                self.writer.add_scalar(tag, float(value), step)
            metrics[tag] = float(value)
        hp = {k: _hparam_value(v) for k, v in _flatten(self.config).items()}
        experiment, start, end = hparams(hp, metrics)
        for proto in (experiment, start, _session_end(status)):
            self.writer.file_writer.add_summary(proto)
        self.writer.close()


def _session_end(status: str):
    """tensorboardX's hparams() always reports success; say how the run really ended."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    code = {"finished": "STATUS_SUCCESS", "failed": "STATUS_FAILURE"}.get(status, "STATUS_UNKNOWN")
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(code)), version=0)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                  content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=meta)])


# ---- fan-out -------------------------------------------------------------------------------

class Loggers:
    """Fan-out to the configured loggers. metrics.jsonl is always written (the record of truth)."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, name: str,
                 group: Optional[str] = None, wandb_run_id: Optional[str] = None,
                 resume_step: Optional[int] = None):
        config = scrub_secrets(config)
        self.sinks: list[Any] = [JsonlLogger(run_dir)]
        self.wandb: Optional[Any] = None  # a WandbLogger (train/engine/wandb_logger.py)
        self.finished = False
        if cfg.tensorboard:
            self.sinks.append(TensorBoardLogger(run_dir, config, resume_step))
        if cfg.wandb != "disabled":
            try:
                from train.engine.wandb_logger import (
                    WandbLogger,  # imports wandb: only when used
                )

                self.wandb = WandbLogger(run_dir, cfg, config, name, group, wandb_run_id)
                self.sinks.append(self.wandb)
            except Exception as e:  # a dashboard must not cost the run
                print(f"warning: wandb could not start ({type(e).__name__}: {e}); continuing without it",
                      file=sys.stderr)

    @property
    def wandb_run_id(self) -> Optional[str]:
        return self.wandb.run_id if self.wandb else None

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.sinks):
            if isinstance(sink, JsonlLogger):
                getattr(sink, method)(*args)
                continue
            try:
                getattr(sink, method)(*args)
            except Exception as e:
                print(f"warning: {type(sink).__name__}.{method} failed ({type(e).__name__}: {e}); "
                      f"dropping it for the rest of the run", file=sys.stderr)
                self.sinks.remove(sink)
                if sink is self.wandb:
                    self.wandb = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._each("scalars", step, values)

    def images(self, step: int, images: dict[str, Any]) -> None:
        self._each("images", step, images)

    def text(self, tag: str, text: str) -> None:
        self._each("text", tag, text)

    def html(self, name: str, path: Path) -> None:
        """A self-contained page (the attention explorer): wandb shows it as wandb.Html; the
        other sinks point at the file, which is in the run directory already."""
        if self.wandb is not None:
            try:
                self.wandb.html(name, Path(path))
            except Exception as e:
                print(f"warning: wandb could not take {path} ({type(e).__name__}: {e})", file=sys.stderr)

    def finish(self, summary: dict, status: str = "finished") -> None:
        """Close every sink (once), each even when another fails: wandb must always see finish()."""
        if self.finished:
            return
        self.finished = True
        for sink in self.sinks:
            try:
                sink.finish(summary, status)
            except Exception as e:  # one broken sink must not hide the others' data
                print(f"warning: closing {type(sink).__name__} failed: {e}", file=sys.stderr)


class NoLoggers:
    """What processes other than 0 log to: nothing (process 0 writes every file of the run)."""

    wandb_run_id = None

    def scalars(self, step: int, values: dict) -> None: ...

    def images(self, step: int, images: dict) -> None: ...

    def text(self, tag: str, text: str) -> None: ...

    def html(self, name: str, path: Path) -> None: ...

    def finish(self, summary: dict, status: str) -> None: ...


# ---- helpers -------------------------------------------------------------------------------

def scrub_secrets(config: dict) -> dict:
    """A copy of a nested config without keys that look like credentials (api_key, token, ...)."""
    out = {}
    for k, v in config.items():
        if SECRET_KEY.search(str(k)):
            continue
        out[k] = scrub_secrets(v) if isinstance(v, dict) else v
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) or (hasattr(v, "ndim") and getattr(v, "ndim") == 0
                                                       and np.issubdtype(np.asarray(v).dtype, np.number))


def _json_value(v: Any) -> Any:
    """Plain Python for JSON: numpy/jax scalars -> float/int; NaN/inf -> null (strict JSON)."""
    if hasattr(v, "ndim") and getattr(v, "ndim") == 0:
        v = np.asarray(v).item()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _hparam_value(v: Any) -> Any:
    """HParams take numbers, strings and bools; None and lists become strings (sweeps may mix them)."""
    if isinstance(v, (bool, int, float, str)):
        return v
    return "null" if v is None else str(v)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _markdown_yaml(config: dict) -> str:
    """The resolved config as YAML in a Markdown code block (TensorBoard's Text tab renders Markdown)."""
    from omegaconf import OmegaConf

    yaml = OmegaConf.to_yaml(OmegaConf.create(config))
    return "\n".join("    " + line for line in yaml.splitlines())  # indented = code block

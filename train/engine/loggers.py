"""Metric sinks: metrics.jsonl (always), TensorBoard event files, and wandb.

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
import netrc
import os
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from train.config import LoggerConfig

SECRET_KEY = re.compile(r"(api_?key|token|secret|password)", re.IGNORECASE)
WANDB_CHECK_S = 3.0  # the longest auto/online waits to learn whether wandb's server answers
WANDB_INIT_S = 8  # the longest an online wandb.init may take before we fall back to offline
WANDB_FINISH_S = 8.0  # the longest finish() may hold up the end of a run (the data stays on disk)


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


# ---- wandb ---------------------------------------------------------------------------------

def _wandb_server() -> tuple[str, int]:
    """(host, port) of the wandb server: WANDB_BASE_URL, or wandb's cloud."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def _has_api_key(host: str) -> bool:
    """An API key in the environment or ~/.netrc (where `wandb login` puts it). Never read out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = WANDB_CHECK_S) -> bool:
    """TCP connect to host:port within `timeout` seconds, DNS included (a thread: DNS ignores timeouts)."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def wandb_mode(requested: str) -> tuple[str, Optional[str]]:
    """(mode, why offline). auto and online: online only with an API key and a server that
    answers a TCP connect within seconds; otherwise offline at once, never a retrying init."""
    if requested not in ("auto", "online"):
        return requested, None
    host, port = _wandb_server()
    asked = "logger.wandb=online, but " if requested == "online" else ""
    if not _has_api_key(host):
        return "offline", f"{asked}no API key (set WANDB_API_KEY or run `wandb login`)"
    if not _reachable(host, port):
        return "offline", f"{asked}{host}:{port} is not reachable"
    return "online", None


class WandbLogger:
    """A wandb run in run_dir/wandb: online, or offline files to `wandb sync` later.

    Neither end of a run waits on wandb for long: an unreachable server means offline from the
    start (wandb_mode), an online start that hangs falls back to offline after WANDB_INIT_S, and
    finish() gives up after WANDB_FINISH_S (the run's data is on disk; the message says how to
    upload it). Logging itself is asynchronous (wandb's service process).
    """

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, name: str, group: Optional[str],
                 run_id: Optional[str] = None):
        import wandb

        self.wandb = wandb
        mode, why = wandb_mode(cfg.wandb)
        kwargs = dict(
            project=cfg.wandb_project, entity=cfg.wandb_entity, dir=str(run_dir), name=name,
            group=cfg.wandb_group or group, tags=list(cfg.wandb_tags), config=scrub_secrets(config),
            id=run_id, resume="allow" if run_id else None,
        )
        try:
            self.run = wandb.init(mode=mode, settings=self._settings(), **kwargs)
        except Exception as e:  # online init failed or timed out: keep the data, sync it later
            if mode != "online":
                raise
            why = f"the online start failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            self.run = wandb.init(mode="offline", settings=self._settings(), **kwargs)
        self.mode = "offline" if self.run.offline else mode
        self.folder = Path(self.run.dir).parent  # run_dir/wandb/offline-run-<time>-<id> (or run-...)
        if why:
            print(f"wandb: logging offline ({why}); upload later with: {self.sync_hint}", file=sys.stderr)
        # The train step is the x-axis of every chart (wandb's own step counts log calls).
        self.run.define_metric("trainer/step")
        self.run.define_metric("*", step_metric="trainer/step")

    def _settings(self):
        # console="off": training output stays in the terminal and Hydra's log, not a copy per run.
        return self.wandb.Settings(init_timeout=WANDB_INIT_S, console="off", silent=True)

    @property
    def sync_hint(self) -> str:
        """The command that uploads this run: its own folder under run_dir/wandb."""
        return f"wandb sync {self.folder}"

    @property
    def run_id(self) -> str:
        return self.run.id

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"trainer/step": int(step), **{k: _json_value(v) for k, v in values.items()}})

    def images(self, step: int, images: dict[str, Any]) -> None:
        def image(v: Any):
            return self.wandb.Image(str(v)) if isinstance(v, (str, Path)) else self.wandb.Image(np.asarray(v))

        self.run.log({"trainer/step": int(step), **{k: image(v) for k, v in images.items()}})

    def text(self, tag: str, text: str) -> None:
        pass  # the resolved config is attached as the run's config

    def finish(self, summary: dict, status: str) -> None:
        """Summary and exit record, on a thread given WANDB_FINISH_S: an online finish can wait
        on uploads for minutes when the server is slow or gone."""
        errors: list[BaseException] = []

        def close() -> None:
            try:
                try:
                    for k, v in summary.items():
                        if _is_number(v) or isinstance(v, str):
                            self.run.summary[k] = _json_value(v)
                finally:
                    self.run.finish(exit_code=0 if status == "finished" else 1)
            except BaseException as e:  # reported below, on the caller's thread
                errors.append(e)

        worker = threading.Thread(target=close, name="wandb-finish", daemon=True)
        worker.start()
        worker.join(WANDB_FINISH_S)
        if worker.is_alive():
            _stop_wandb_service()  # else wandb's exit hook waits for it, unbounded
            worker.join(1.0)  # wandb reports its own side first
            print(f"wandb: finishing took over {WANDB_FINISH_S:.0f}s and was stopped; the run is saved on "
                  f"disk; upload it with: {self.sync_hint}", file=sys.stderr)
            return
        if errors:
            raise errors[0]
        if self.mode == "offline":
            print(f"wandb: offline run saved; upload with: {self.sync_hint}", file=sys.stderr)


def _stop_wandb_service() -> None:
    """Kill wandb's service process (wandb-core), and drop wandb's exit hook that waits for it
    without a timeout. The run's transaction log stays on disk for `wandb sync`."""
    try:
        from wandb.sdk import wandb_setup

        setup = wandb_setup._singleton
        conn = setup._connection if setup else None
        if conn is None or conn._proc is None:
            return
        if conn._cleanup:
            conn._cleanup()  # atexit.unregister(wandb's teardown hook)
        if conn._proc._process.poll() is None:
            conn._proc._process.kill()
    except Exception as e:  # wandb internals moved: nothing more to do than say so
        print(f"wandb: could not stop the wandb service ({type(e).__name__}: {e}); exit may wait for it",
              file=sys.stderr)


# ---- fan-out -------------------------------------------------------------------------------

class Loggers:
    """Fan-out to the configured loggers. metrics.jsonl is always written (the record of truth)."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, name: str,
                 group: Optional[str] = None, wandb_run_id: Optional[str] = None,
                 resume_step: Optional[int] = None):
        config = scrub_secrets(config)
        self.sinks: list[Any] = [JsonlLogger(run_dir)]
        self.wandb: Optional[WandbLogger] = None
        self.finished = False
        if cfg.tensorboard:
            self.sinks.append(TensorBoardLogger(run_dir, config, resume_step))
        if cfg.wandb != "disabled":
            try:
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

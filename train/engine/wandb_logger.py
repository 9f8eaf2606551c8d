"""The wandb sink: a wandb run in run_dir/wandb, online or offline, that never holds a run up.

Online is used only with an API key and a server that answers a TCP connect within seconds
(`wandb_mode`); anything else logs offline from the start, with the exact `wandb sync` command
in the message. An online start that hangs falls back to offline after WANDB_INIT_S; finish()
gives up after WANDB_FINISH_S and stops wandb's service process, whose exit hook would otherwise
wait for it without a timeout. The run's data stays on disk for `wandb sync` either way.
"""

from __future__ import annotations

import netrc
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import numpy as np

from train.config import LoggerConfig
from train.engine.loggers import _is_number, _json_value, scrub_secrets

WANDB_CHECK_S = 3.0  # the longest auto/online waits to learn whether wandb's server answers
WANDB_INIT_S = 8  # the longest an online wandb.init may take before we fall back to offline
WANDB_FINISH_S = 8.0  # the longest finish() may hold up the end of a run (the data stays on disk)


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

    def html(self, name: str, path: Path) -> None:
        """A self-contained page, shown in the run's workspace (wandb.Html keeps its inline scripts)."""
        self.run.log({name: self.wandb.Html(path.read_text(encoding="utf-8"), inject=False)})

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

"""What each logger leaves on disk, read back with the tools' own readers.

metrics.jsonl as JSON lines; TensorBoard events through TensorBoard's EventAccumulator (scalars,
images, text, and the HParams plugin's session records); the wandb offline run through its
transaction log (run-*.wandb). Then wandb with a server that never answers: offline at once,
and a finish that never holds up the end of a run.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from train.config import LoggerConfig
from train.engine.loggers import Loggers, scrub_secrets
from train.engine.wandb_logger import wandb_mode

SECRET = "0123456789abcdef0123456789abcdef0123abcd"  # a fake wandb API key (40 hex characters)
CONFIG = {"seed": 0, "model": {"num_heads": 4, "head_dim": None}, "logger": {"wandb": "offline"}}


def wandb_records(run_dir: Path) -> list:
    """Records of the offline run's transaction log.

    The file is LevelDB's log format (7-byte ':W&B' header, 32 KiB blocks of CRC/length/type
    chunks, each record a wandb Record protobuf). wandb 0.31 dropped its Python reader, so the few
    lines of framing are read here; the records are parsed with wandb's own protobufs.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    data, pos, block, buf, out = path.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7: pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start a record, MIDDLE/LAST extend
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def finished_records(run_dir: Path, timeout: float = 20.0) -> list:
    """The records once the exit record is on disk: wandb-core writes the log in its own process
    and may still be flushing when finish() returns (the end of the Python process waits for it)."""
    import time

    deadline = time.time() + timeout
    while True:
        records = wandb_records(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item})
    return rows


@pytest.fixture
def logged_run(tmp_path, monkeypatch):
    """A run directory after a few log calls through all three loggers, with an API key in the env."""
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = {**CONFIG, "logger": {"wandb": "offline", "api_key": SECRET}}  # must never be written
    loggers = Loggers(tmp_path, LoggerConfig(wandb="offline", tensorboard=True), config, name="run-a",
                      group="sweep-1")
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, :16] = 255
    loggers.scalars(10, {"train/loss": np.float32(2.5), "train/lr": 1e-3})
    loggers.scalars(20, {"train/loss": 2.0, "val/loss": 2.2, "val/bleu": 1.5})
    from PIL import Image

    Image.fromarray(image[:12]).save(tmp_path / "map.png")
    loggers.images(20, {"attention/cross/layer0": image, "attention/cross/layer1": tmp_path / "map.png"})
    loggers.finish({"val/loss": 2.2, "val/bleu": 1.5, "test/bleu": 1.25, "params": 1234, "steps": 20,
                    "compiles": {"train_step": 1}, "status": "finished"}, "finished")
    return tmp_path


def test_jsonl_has_integer_steps_and_plain_numbers(logged_run):
    lines = [json.loads(line) for line in (logged_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines] == [10, 20]
    assert all(isinstance(row["step"], int) for row in lines)
    assert lines[0]["train/loss"] == 2.5 and lines[1]["val/bleu"] == 1.5


def test_tensorboard_scalars_images_text_and_hparams(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hp_metadata

    acc = EventAccumulator(str(logged_run / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "val/bleu", "test/bleu", "summary/params"} <= set(tags["scalars"])
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 2.5), (20, 2.0)]
    assert acc.Scalars("test/bleu")[-1].value == 1.25  # only in the summary: written at the last step
    (img,) = acc.Images("attention/cross/layer0")  # from an array
    assert (img.step, img.width, img.height) == (20, 32, 24)
    (png,) = acc.Images("attention/cross/layer1")  # from a PNG file, bytes unchanged
    assert (png.step, png.width, png.height) == (20, 32, 12)
    assert png.encoded_image_string == (logged_run / "map.png").read_bytes()
    assert "config/text_summary" in tags["tensors"]
    assert "num_heads: 4" in acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()

    # HParams: session start/end and the experiment, in this run's own event stream (not a subfolder)
    assert [p.name for p in (logged_run / "tb").iterdir() if p.is_dir()] == []
    content = acc.PluginTagToContent("hparams")
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["model.num_heads"].number_value == 4
    assert start.hparams["model.head_dim"].string_value == "null"
    end = hp_metadata.parse_session_end_info_plugin_data(content[hp_metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS
    experiment = hp_metadata.parse_experiment_plugin_data(content[hp_metadata.EXPERIMENT_TAG])
    assert {m.name.tag for m in experiment.metric_infos} == {"val/loss", "val/bleu", "test/bleu",
                                                             "summary/params", "summary/steps"}


def test_wandb_offline_run_has_config_group_metrics_images_and_finish(logged_run):
    (run_folder,) = list((logged_run / "wandb").glob("offline-run-*"))
    records = finished_records(logged_run)
    kinds = [r.WhichOneof("record_type") for r in records]
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "sweep-1" and run.display_name == "run-a"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["model"] == {"num_heads": 4, "head_dim": None}
    assert "api_key" not in config["logger"]
    rows = history(records)
    assert [row["trainer/step"] for row in rows] == [10, 20, 20]  # the train step, monotonic
    assert rows[0]["train/loss"] == 2.5
    assert rows[2]["attention/cross/layer0/_type"] == "image-file"
    assert rows[2]["attention/cross/layer1/height"] == 12
    assert len(list((run_folder / "files" / "media" / "images").rglob("*.png"))) == 2
    assert "exit" in kinds  # finish() ran
    summary = {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
               for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert summary["test/bleu"] == 1.25


def test_no_secret_anywhere_in_the_run_directory(logged_run):
    for path in logged_run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"API key written to {path}"


def test_failed_run_still_finishes_every_logger(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    loggers = Loggers(tmp_path, LoggerConfig(wandb="offline"), CONFIG, name="run-b")
    loggers.scalars(5, {"train/loss": float("nan")})  # a diverged run: strict JSON gets null
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        loggers.finish({"steps": 5}, "failed")  # what the training loop's `finally` does
    loggers.finish({"steps": 5}, "failed")  # a second call is harmless
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["train/loss"] is None
    exits = [r.exit for r in finished_records(tmp_path) if r.WhichOneof("record_type") == "exit"]
    assert len(exits) == 1 and exits[0].exit_code == 1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hp_metadata

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    end = acc.PluginTagToContent("hparams")[hp_metadata.SESSION_END_INFO_TAG]
    assert hp_metadata.parse_session_end_info_plugin_data(end).status == 2  # STATUS_FAILURE


def test_auto_mode_goes_offline_without_a_key_quickly(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    start = time.time()
    mode, why = wandb_mode("auto")
    assert mode == "offline" and "API key" in why
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.invalid")  # reserved TLD: never resolves
    mode, why = wandb_mode("auto")
    assert mode == "offline" and "not reachable" in why
    assert time.time() - start < 5
    assert wandb_mode("disabled") == ("disabled", None)


def test_scrub_secrets_drops_credential_like_keys():
    cfg = {"logger": {"wandb_api_key": "x", "wandb": "auto", "nested": {"token": "y"}}, "seed": 1}
    assert scrub_secrets(cfg) == {"logger": {"wandb": "auto", "nested": {}}, "seed": 1}


# ---- wandb with a server that never answers -------------------------------------------------

def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable_wandb(monkeypatch):
    """An API key, and WANDB_BASE_URL pointing at a closed local port."""
    port = closed_port()
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # a subprocess starts its own wandb service
    return port


def test_online_with_an_unreachable_server_goes_offline_at_once(tmp_path, unreachable_wandb, capsys):
    import time

    t0 = time.time()
    loggers = Loggers(tmp_path, LoggerConfig(wandb="online"), CONFIG, name="run-c")
    init_s = time.time() - t0
    loggers.scalars(1, {"train/loss": 3.0})
    t1 = time.time()
    loggers.finish({"steps": 1}, "finished")
    finish_s = time.time() - t1
    err = capsys.readouterr().err
    assert loggers.wandb.mode == "offline"
    assert init_s < 6 and finish_s < 4, (init_s, finish_s)  # an online init used to retry for ~9 s
    assert f"logger.wandb=online, but 127.0.0.1:{unreachable_wandb} is not reachable" in err
    (folder,) = list((tmp_path / "wandb").glob("offline-run-*"))
    assert err.count(f"wandb sync {folder}") == 2  # the exact folder to upload, at start and at finish
    assert any(r.WhichOneof("record_type") == "exit" for r in finished_records(tmp_path))


def test_auto_and_online_probe_the_servers_own_port(monkeypatch):
    """A self-hosted server on a custom port is probed there (not on 443)."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("WANDB_API_KEY", SECRET)
        assert wandb_mode("online") == ("online", None) == wandb_mode("auto")


HUNG_SERVICE = """
import os, signal, sys, time
from pathlib import Path
import train.engine.wandb_logger as W
from train.config import LoggerConfig
from train.engine.loggers import Loggers
from wandb.sdk import wandb_setup
W.WANDB_FINISH_S = 2.0
loggers = Loggers(Path(sys.argv[1]), LoggerConfig(wandb="offline"), {"seed": 0}, name="hung")
loggers.scalars(1, {"train/loss": 1.0})
os.kill(wandb_setup._singleton._connection._proc._process.pid, signal.SIGSTOP)  # wandb-core hangs
t = time.time()
loggers.finish({"steps": 1}, "finished")
print(f"finish {time.time() - t:.2f}", flush=True)
"""


def test_finish_never_blocks_exit_when_wandb_hangs(tmp_path, monkeypatch):
    """wandb's service process stopped (as when uploads hang): finish() returns after
    WANDB_FINISH_S, the process exits at once (wandb's exit hook would wait for the service
    forever), and the message says how to upload the run."""
    import time

    from tests.conftest import run_cli

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # its own service, not this process's
    t0 = time.time()
    proc = run_cli(["-c", HUNG_SERVICE, str(tmp_path)], timeout=60)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    finish_s = float(proc.stdout.split()[-1])
    assert 2.0 <= finish_s < 4.0 and wall < 20, (finish_s, wall)
    (folder,) = list((tmp_path / "wandb").glob("offline-run-*"))
    assert f"finishing took over 2s and was stopped; the run is saved on disk; upload it with: wandb sync {folder}" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "metrics.jsonl").read_text().strip() == '{"step": 1, "train/loss": 1.0}'


@pytest.mark.slow
def test_training_with_wandb_online_and_no_server_finishes(tmp_path, unreachable_wandb):
    """A real (tiny) training run with logger.wandb=online, an API key and no server: it logs
    offline from the start and ends like a run without wandb."""
    import time

    from tests.conftest import run_cli
    from tests.test_evaluate import FAST_XLA, write_corpus

    write_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    args = ["-m", "train", "model=tiny", "model.num_layers=1", "data=local", f"data.path={tmp_path / 'corpus'}",
            "data.source_lang=en", "data.target_lang=es", "data.vocab_size=100", "data.max_source_len=16",
            "data.max_target_len=16", "data.max_tokens=256", f"data.cache_dir={tmp_path / 'data-cache'}",
            "train.max_steps=10", "train.log_every=5", "train.eval_every=10", "train.val_bleu_examples=8",
            "train.probe_examples=0", "train.progress=false", "logger.tensorboard=false", "logger.wandb=online",
            f"hydra.run.dir={run_dir}"]
    t0 = time.time()
    proc = run_cli(args, env=FAST_XLA, timeout=300)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert wall - summary["wall_s"] < 60, (wall, summary["wall_s"])  # start-up and exit, wandb included
    assert f"127.0.0.1:{unreachable_wandb} is not reachable" in proc.stderr
    (folder,) = list((run_dir / "wandb").glob("offline-run-*"))
    assert f"wandb sync {folder}" in proc.stderr
    records = finished_records(run_dir)
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0]
    assert any(row.get("trainer/step") == 10 for row in history(records))

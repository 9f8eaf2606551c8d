"""The dashboards as a user sees them, after a real (very short) training run.

One module-scoped run of `python -m train` on a small synthetic parallel corpus (written here, so
the test does not depend on any corpus download) leaves a run directory; then
  - test_run_directory_has_every_artifact reads it back: attention PNG/npz for every type and
    layer, TensorBoard scalars/images/hparams, the wandb offline run's metrics and images;
  - test_tensorboard_in_a_browser starts TensorBoard on loopback over it, opens it in headless
    Chromium (Debian's `chromium`, driven by Playwright), checks that the scalar charts and an
    attention image are shown, and saves a screenshot.

`python tests/test_dashboard_browser.py RUN_DIR OUT.png [timeseries|images]` takes the README's
screenshots of a run.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import run_cli  # noqa: E402

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ENCODER_LAYERS = DECODER_LAYERS = 2  # model=tiny
STEPS = 20  # validation + attention probe run once, at the end: the fewest compiles

pytestmark = pytest.mark.slow


def write_corpus(folder: Path) -> None:
    """English-like -> Spanish-like word-for-word pairs: learnable in a few steps, so the maps
    are not noise. Plain text files, the `data=local` format."""
    rng = random.Random(0)
    lexicon = dict(zip("the a cat dog sees likes big small red blue house tree bird runs".split(),
                       "el un gato perro ve quiere grande pequeño rojo azul casa árbol pájaro corre".split()))
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 1500), ("validation", 48), ("test", 16)):
        src = [" ".join(rng.choice(list(lexicon)) for _ in range(rng.randint(3, 9))) for _ in range(n)]
        (folder / f"{split}.src").write_text("\n".join(src) + "\n")
        (folder / f"{split}.tgt").write_text("\n".join(" ".join(lexicon[w] for w in s.split()) for s in src) + "\n")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    write_corpus(root / "corpus")
    run_dir = root / "run"
    proc = run_cli([
        "-m", "train", "model=tiny", "data=local", f"data.path={root / 'corpus'}", "data.vocab_size=200",
        f"data.cache_dir={root / 'cache'}", "data.max_source_len=16", "data.max_target_len=16",
        "data.max_tokens=512",
        f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "train.log_every=5",
        "train.checkpoint_every=0", "train.val_bleu_examples=16", "train.progress=false",
        "logger.wandb=offline", f"hydra.run.dir={run_dir}",
    ], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def test_run_directory_has_every_artifact(trained_run):
    names = {f"{kind}_layer{i}" for kind, layers in (("encoder_self", ENCODER_LAYERS), ("decoder_self", DECODER_LAYERS),
                                                     ("cross", DECODER_LAYERS)) for i in range(layers)}
    folder = trained_run / "attention" / f"step_{STEPS}"
    assert {p.stem for p in folder.glob("*.png")} == names
    assert {p.stem for p in folder.glob("*.npz")} == names

    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    attn_keys = {k for row in rows for k in row if k.startswith("attn/")}
    assert "attn/cross/layer1/entropy_mean" in attn_keys and "attn/encoder_self/layer0/distance_max" in attn_keys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "val/loss", "attn/cross/layer1/entropy_mean"} <= set(tags["scalars"])
    assert {"attention/cross/layer1", "attention/encoder_self/layer0",
            "attention_stats/decoder_self/entropy"} <= set(tags["images"])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")

    from test_loggers import finished_records, history

    wandb_rows = history(finished_records(trained_run))
    wandb_keys = {k.split("/_type")[0] for row in wandb_rows for k in row}
    assert {"train/loss", "val/loss", "attn/cross/layer1/entropy_mean", "attention/cross/layer1"} <= wandb_keys
    steps = [row["trainer/step"] for row in wandb_rows]
    assert steps == sorted(steps) and steps[-1] == STEPS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tensorboard(logdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """TensorBoard on loopback over logdir; yields its URL once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1", f"--port={port}",
         "--load_fast=false", "--reload_interval=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/data/runs", timeout=2) as r:
                    if json.loads(r.read()):  # the run has been loaded
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                output = proc.stdout.read() if proc.poll() is not None else ""
                raise RuntimeError(f"TensorBoard did not come up: {output}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def hparams_experiment(url: str) -> dict:
    request = urllib.request.Request(f"{url}/data/plugin/hparams/experiment", method="POST",
                                     data=json.dumps({"experimentName": ""}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def show_dashboard(url: str, page, tag_filter: str) -> None:
    """Open the Time Series dashboard filtered to `tag_filter`, settings pane closed."""
    page.goto(f"{url}/#timeseries")
    page.wait_for_selector("image-card, scalar-card", timeout=60_000)
    page.locator("metrics-tag-filter-component input").fill(tag_filter)
    page.keyboard.press("Escape")  # close the tag autocomplete
    close = page.locator("button[aria-label='Close side pane']")
    if close.count():  # the settings pane takes a third of the width
        close.first.click()


def launch_browser(playwright):
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


def test_tensorboard_in_a_browser(trained_run, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (CI installs it)")

    with tensorboard(trained_run) as url:
        experiment = hparams_experiment(url)  # the HParams tab's data: this run's config and metrics
        assert {"model.num_heads", "optim.lr"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert "val/loss" in {m["name"]["tag"] for m in experiment["metricInfos"]}

        with sync_api.sync_playwright() as p:
            browser = launch_browser(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                show_dashboard(url, page, "train/loss|val/loss|attention/cross/layer0$")

                for tag in ("train/loss", "val/loss"):  # a drawn chart whose table lists the run's last step
                    card = page.locator("scalar-card", has_text=tag).first
                    card.locator("line-chart").wait_for(timeout=30_000)
                    sync_api.expect(card.locator("scalar-card-data-table")).to_contain_text(str(STEPS))

                image = page.locator("image-card", has_text="attention/cross/layer0").locator("img").first
                image.wait_for(timeout=30_000)
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                                       timeout=30_000)
                assert image.evaluate("img => img.naturalWidth") >= 300  # the figure, not a broken icon
                page.screenshot(path=str(tmp_path / "tensorboard.png"))
            finally:
                browser.close()
    assert (tmp_path / "tensorboard.png").stat().st_size > 10_000


def screenshot(run_dir: Path, out: Path, view: str = "timeseries") -> None:
    """The README's pictures of a real run: `timeseries` (scalar charts next to attention maps) or
    `images` (the Images tab: every attention map, larger)."""
    from playwright.sync_api import sync_playwright

    with tensorboard(run_dir) as url, sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900 if view == "timeseries" else 1100})
        if view == "timeseries":
            show_dashboard(url, page, "train/loss|val/bleu|attention/cross/layer")
        else:
            page.goto(f"{url}/#images")
        page.locator("img[src*='image']").first.wait_for(timeout=60_000)
        time.sleep(3)  # let charts and images finish loading
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":  # python tests/test_dashboard_browser.py RUN_DIR OUT.png [timeseries|images]
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])

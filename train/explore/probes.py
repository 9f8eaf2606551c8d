"""One run's attention probes, read back and packed small for the page.

The probe (train/evals/probe.py) leaves run_dir/attention/step_N/{type}_layer{l}.npz at step 0
and at every validation. Here every step folder is checked whole: a step is kept only when the
file of every attention type and layer is there and reads (a killed run leaves a step half
written); the others are reported as skipped. Kept steps are packed for the browser:

  tokens   per type, per probe pair: the query and the key subwords, cropped to the real tokens
  maps     per type and layer, one base64 string: uint8 weights (round(w * 255), 8 bits),
           laid out [step][pair][head][query][key] over the cropped tokens only, for the steps
           of the slider (`steps`: every kept step, or an even subset when the page would
           exceed its size budget, see Probes.keep_maps)
  stats    per type and statistic: [step][layer][head] over every kept step (`stat_steps`),
           from the full float16 weights with train/analysis/attention_stats.head_stats, called
           as the probe calls it
  heads    per type, the most heads of any layer, and `layer_heads`, each layer's own count (a
           pruned run's layers differ; a layer's blob holds its own heads only; stats of heads a
           layer lacks are null)
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from model.config import ATTENTION_TYPES
from train.analysis.attention_stats import STATS, stack_layers, stats_of_kind
from train.errors import first_line

FIELDS = ("weights", "query_tokens", "key_tokens", "query_valid", "key_valid", "key_ids")
LEVELS = 255  # 8-bit weights: 0..255 stand for 0..1


@dataclass
class Probes:
    """What the page gets from one run: kept steps, their packed maps and stats, what was skipped."""

    steps: list[int]  # every complete step
    types: dict[str, dict]  # type -> {"layers", "heads", "tokens", "stats"}
    maps: dict[str, list[list[bytes]]]  # type -> [layer][step index] 8-bit weights
    skipped: list[str] = field(default_factory=list)  # one line per step left out, with the reason
    raw_bytes: int = 0  # float16 weights read, before cropping and quantising
    map_steps: list[int] = field(default_factory=list)  # indices of the steps whose maps are kept

    def __post_init__(self) -> None:
        self.map_steps = self.map_steps or list(range(len(self.steps)))

    def step_bytes(self) -> int:
        """Bytes of 8-bit weights one step adds (before base64)."""
        return sum(len(per_step[0]) for layers in self.maps.values() for per_step in layers if per_step)

    def keep_maps(self, count: int) -> None:
        """Keep the maps of `count` steps spread evenly over training, the first and last included."""
        n = len(self.steps)
        if count < n:
            self.map_steps = sorted({int(round(i)) for i in np.linspace(0, n - 1, max(count, 2))})

    def to_json(self) -> dict:
        types = {kind: {**t, "maps": [base64.b64encode(b"".join(per_step[i] for i in self.map_steps)).decode("ascii")
                                      for per_step in self.maps[kind]]} for kind, t in self.types.items()}
        return {"steps": [self.steps[i] for i in self.map_steps], "stat_steps": self.steps,
                "stat_index": self.map_steps, "types": types, "skipped": self.skipped}


def step_folders(run_dir: Path) -> dict[int, Path]:
    """{step: run_dir/attention/step_N} for every step folder holding an npz, in step order."""
    found = {}
    for path in (Path(run_dir) / "attention").glob("step_*"):
        match = re.fullmatch(r"step_(\d+)", path.name)
        if match and path.is_dir() and any(path.glob("*.npz")):
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def has_probes(run_dir: Path) -> bool:
    return bool(step_folders(run_dir))


def expected_layers(folders: dict[int, Path], config_layers: Optional[dict[str, int]]) -> dict[str, int]:
    """Layers per attention type: the run's config when known, else the most any step folder holds."""
    if config_layers:
        return dict(config_layers)
    out = {}
    for kind in ATTENTION_TYPES:
        counts = [len(list(folder.glob(f"{kind}_layer*.npz"))) for folder in folders.values()]
        out[kind] = max(counts, default=0)
    return out


def read_layer(path: Path) -> dict[str, np.ndarray]:
    """Every field the page needs from one npz; raises on a missing, truncated or odd file."""
    with np.load(path) as npz:
        layer = {name: npz[name] for name in FIELDS}
    w = layer["weights"]
    k, _, tq, tk = w.shape
    if layer["query_valid"].shape != (k, tq) or layer["key_valid"].shape != (k, tk):
        raise ValueError(f"weights {w.shape} do not match the validity masks")
    return layer


def read_step(folder: Path, layers: dict[str, int]) -> dict[str, list[dict[str, np.ndarray]]]:
    """{type: [layer dicts]} for one step; raises ValueError naming the first bad file."""
    out = {}
    for kind in ATTENTION_TYPES:
        out[kind] = []
        for layer in range(layers[kind]):
            path = folder / f"{kind}_layer{layer}.npz"
            if not path.exists():
                raise ValueError(f"{path.name} is missing")
            try:
                out[kind].append(read_layer(path))
            except Exception as e:  # truncated zip, bad CRC, missing field: the step is incomplete
                raise ValueError(f"{path.name} does not read ({first_line(e)})") from e
    return out


def layer_stats(layer: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """The statistics of one saved layer, computed as the probe computes them while training."""
    return stats_of_kind(layer["weights"].astype(np.float32), layer["key_ids"], layer["query_valid"],
                         layer["key_valid"], kind)


def crop_tokens(layer: dict[str, np.ndarray]) -> list[list[list[str]]]:
    """Per probe pair: [query tokens, key tokens], real tokens only."""
    return [[[str(t) for t in layer["query_tokens"][k][layer["query_valid"][k]]],
             [str(t) for t in layer["key_tokens"][k][layer["key_valid"][k]]]]
            for k in range(layer["weights"].shape[0])]


def quantise(layer: dict[str, np.ndarray]) -> bytes:
    """uint8 weights of every pair, cropped to its real tokens: [pair][head][query][key]."""
    parts = []
    for k in range(layer["weights"].shape[0]):
        w = layer["weights"][k][:, layer["query_valid"][k]][:, :, layer["key_valid"][k]]
        parts.append(np.clip(np.rint(w.astype(np.float32) * LEVELS), 0, LEVELS).astype(np.uint8).tobytes())
    return b"".join(parts)


def rounded(values: np.ndarray) -> list:
    """(L, H) floats -> nested lists with 4 significant digits, None for NaN (JSON has no NaN)."""
    return [[None if not np.isfinite(v) else float(f"{v:.4g}") for v in row] for row in np.asarray(values)]


def signature(step: dict[str, list[dict[str, np.ndarray]]]) -> tuple:
    """What must not change between steps: heads of every layer and the probe pairs' tokens."""
    return tuple((kind, tuple(layer["weights"].shape[1] for layer in layers), str(crop_tokens(layers[0])))
                 for kind, layers in step.items() if layers)


def load_probes(run_dir: Path, config_layers: Optional[dict[str, int]] = None) -> Probes:
    """Read, check and pack every step; raises ValueError when no step is complete."""
    folders = step_folders(run_dir)
    layers = expected_layers(folders, config_layers)
    kept: list[int] = []
    skipped: list[str] = []
    maps: dict[str, list[list[bytes]]] = {kind: [[] for _ in range(layers[kind])] for kind in ATTENTION_TYPES}
    stats: dict[str, dict[str, list]] = {kind: {name: [] for name in STATS} for kind in ATTENTION_TYPES}
    first: Optional[dict] = None
    raw = 0
    for step, folder in folders.items():
        try:
            data = read_step(folder, layers)
        except ValueError as e:
            skipped.append(f"step {step}: {e}")
            continue
        if first is not None and signature(data) != signature(first):
            skipped.append(f"step {step}: its probe pairs or head counts differ from step {kept[0]}'s")
            continue
        first = first or data
        kept.append(step)
        for kind in ATTENTION_TYPES:
            grids = stack_layers([layer_stats(layer, kind) for layer in data[kind]]) if data[kind] else {}
            for name in STATS:
                stats[kind][name].append(rounded(grids[name]) if grids else [])
            for n, layer in enumerate(data[kind]):
                maps[kind][n].append(quantise(layer))
                raw += layer["weights"].nbytes
    if first is None:
        raise ValueError("no complete probe step: " + "; ".join(skipped))
    types = {}
    for kind in ATTENTION_TYPES:
        if not first[kind]:
            continue
        layer_heads = [int(layer["weights"].shape[1]) for layer in first[kind]]
        types[kind] = {"layers": layers[kind], "heads": max(layer_heads), "layer_heads": layer_heads,
                       "tokens": crop_tokens(first[kind][0]), "stats": stats[kind]}
    return Probes(kept, types, {kind: maps[kind] for kind in types}, skipped, raw)

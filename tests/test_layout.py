"""The layout rules the README states: they fail here, not in a reader's head."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

COMMANDS = {"train.__main__", "train.evaluate", "train.translate", "train.heads", "train.attention_figures",
            "train.prepare", "train.report.__main__", "train.bench.__main__", "train.explore.__main__", "train.prune"}
MAX_LINES = 400


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imported(path: Path) -> set[str]:
    """Every module an import statement in `path` names, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_model_and_data_import_nothing_from_train():
    for package in ("model", "data"):
        for name, path in modules(package).items():
            bad = sorted(m for m in imported(path) if m == "train" or m.startswith("train."))
            assert not bad, f"{name} imports {bad}: {package}/ must not depend on train/"
            assert not any(m == "hydra" or m.startswith("hydra.") for m in imported(path)), \
                f"{name} imports Hydra: only train/ sees Hydra"


def test_no_command_imports_another():
    for name, path in modules("train").items():
        others = sorted(m for m in imported(path) if m in COMMANDS and not m.startswith(name.removesuffix(".__main__")))
        assert not others, f"{name} imports the command(s) {others}: move what they share into the library"


def test_library_does_not_import_commands():
    for name, path in modules("train").items():
        if name in COMMANDS:
            continue
        bad = sorted(m for m in imported(path) if m in COMMANDS)
        assert not bad, f"{name} imports the command(s) {bad}"


def test_files_stay_readable_in_one_sitting():
    for package in ("model", "data", "train", "tests"):
        for name, path in modules(package).items():
            lines = len(path.read_text().splitlines())
            assert lines <= MAX_LINES, f"{path.relative_to(REPO_ROOT)} has {lines} lines (> {MAX_LINES}): split it by concern"


def test_every_folder_says_what_it_holds():
    for package in ("model", "data", "train", "train/engine", "train/evals", "train/analysis", "train/sweep",
                    "train/report", "train/bench", "train/explore"):
        init = REPO_ROOT / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) if init.is_file() else None
        assert doc and len(doc.splitlines()) >= 2, f"{package}/__init__.py should say what the folder holds"

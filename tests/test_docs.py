"""The documentation reads true against the code: every code reference in docs/attention.md
resolves to a symbol that exists, every picture it shows is in the repository, every command it
gives is a module of this project, and the README links to it."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "attention.md"
CODE_LINK = re.compile(r"\[`([A-Za-z_][\w.]*)`\]\(\.\./([\w/]+\.py)\)")  # [`Class.method`](../model/x.py)


def defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assignments, and Class.method for every method."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{m.name}" for m in node.body if isinstance(m, ast.FunctionDef)}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_every_code_reference_resolves():
    text = DOC.read_text()
    refs = CODE_LINK.findall(text)
    assert len(refs) >= 15, "the document should point at the code it explains"
    missing = [f"{name} in {path}" for name, path in refs
               if not (REPO_ROOT / path).is_file() or name not in defined_names(REPO_ROOT / path)]
    assert not missing, f"docs/attention.md names code that does not exist: {missing}"


def test_symbols_in_code_spans_that_name_attention_members_exist():
    """`self.qkv`, `self.q`, `self.kv`, `self.out`: attributes the text says MultiHeadAttention has."""
    source = (REPO_ROOT / "model" / "attention.py").read_text()
    for attr in set(re.findall(r"`self\.(\w+)`", DOC.read_text())):
        assert f"self.{attr} =" in source, f"MultiHeadAttention has no self.{attr}"


def test_pictures_exist_and_commands_are_modules():
    text = DOC.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) >= 3
    for image in images:
        assert (DOC.parent / image).is_file(), image
    for module in set(re.findall(r"python -m ([\w.]+)", text)):
        assert importlib.util.find_spec(module) is not None, module
    for path in re.findall(r"tests/test_\w+\.py", text):
        assert (REPO_ROOT / path).is_file(), path


def test_readme_first_screen_links_the_document():
    first_screen = "\n".join((REPO_ROOT / "README.md").read_text().splitlines()[:25])
    assert "docs/attention.md" in first_screen

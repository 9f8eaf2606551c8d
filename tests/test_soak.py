"""The soak in the suite: 3 SIGKILLs at drawn moments of a run, with a fixed seed; everything the
unbroken run logs and saves must come out bitwise the same (tests/soak.py; `python -m tests.soak
--kills 20 --seed S` is the long version)."""

from __future__ import annotations

import pytest

from tests import soak


@pytest.mark.long
def test_three_kills_lose_nothing(tmp_path, capsys):
    line, ok = soak.soak(kills=3, seed=7, ws=tmp_path)
    with capsys.disabled():
        print("\n" + line)
    assert ok, line
    assert line.startswith("soak: 3/3 kills survived, 0 differences, 0 lost log lines")

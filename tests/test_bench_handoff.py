"""``bench/handoff.py``, the hand-off cost script: a short run prints a positive CPU figure for each
of its three round trips, and refuses counts out of range."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "handoff.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_handoff", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_prints_each_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--trips", "300", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    rows = {
        label: [float(us) for us in re.findall(r"([\d.]+) us", rest)]
        for label, rest in re.findall(r"^  (two [^\d]+?)\s{2,}(.*)$", out, re.MULTILINE)
    }
    assert set(rows) == {
        "two processes, loopback TCP",
        "two processes, Unix socket pair",
        "two threads, queue.SimpleQueue",
    }
    for figures in rows.values():
        assert len(figures) == 2
        assert all(0 < us < 100_000 for us in figures)


@pytest.mark.parametrize("argv", [["--trips", "0"], ["--repeat", "21"], ["--trips", "x"]])
def test_counts_out_of_range_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        _load().main(argv)
    assert stopped.value.code == 2

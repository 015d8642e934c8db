"""The CI benchmark gate (bench/gate.py): its comparison with the baseline on made-up measurements,
its exit statuses and report, the committed baseline, and one real run of one cheap ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import gate  # bench/gate.py  # noqa: E402

HIGHER, LOWER = gate.HIGHER, gate.LOWER


def baseline_document(**entries: dict[str, Any]) -> dict[str, Any]:
    return {"schema": gate.BASELINE_SCHEMA, "ratios": entries}


def baseline(**entries: dict[str, Any]) -> gate.Baseline:
    return gate.parse_baseline(baseline_document(**entries))


def measured(**ratios: tuple[float, str]) -> dict[str, gate.Measured]:
    return {name: gate.Measured(value, direction) for name, (value, direction) in ratios.items()}


def verdict(value: float, base: float, direction: str, **entry: Any) -> gate.Verdict:
    """The verdict on one ratio measured at ``value`` against a baseline of ``base``."""
    (result,) = gate.compare(
        measured(r=(value, direction)),
        baseline(r={"value": base, "direction": direction, **entry}),
        tolerance=0.25,
    )
    return result


# --- the comparison -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "base", "worse_30", "worse_20"),
    [(LOWER, 1.0, 1.3, 1.2), (HIGHER, 2.0, 1.4, 1.6)],
)
def test_30_percent_worse_fails_and_20_percent_worse_passes(
    direction: str, base: float, worse_30: float, worse_20: float
) -> None:
    failing = verdict(worse_30, base, direction)
    assert failing.status == gate.REGRESSION
    assert failing.failed
    assert failing.worse_by == pytest.approx(0.30)
    passing = verdict(worse_20, base, direction)
    assert passing.status == gate.PASS
    assert not passing.failed
    assert passing.worse_by == pytest.approx(0.20)


def test_the_direction_decides_what_worse_is() -> None:
    # The same numbers: a lower-is-better ratio that went up 30 % regressed; a higher-is-better
    # one improved.
    assert verdict(1.3, 1.0, LOWER).status == gate.REGRESSION
    assert verdict(1.3, 1.0, HIGHER).status == gate.IMPROVED
    assert verdict(0.7, 1.0, HIGHER).status == gate.REGRESSION
    assert verdict(0.7, 1.0, LOWER).status == gate.IMPROVED
    assert gate.worse_by(1.1, 1.0, LOWER) == pytest.approx(0.1)
    assert gate.worse_by(1.1, 1.0, HIGHER) == pytest.approx(-0.1)


@pytest.mark.parametrize(("direction", "value"), [(LOWER, 0.1), (HIGHER, 50.0)])
def test_an_improvement_never_fails(direction: str, value: float) -> None:
    result = verdict(value, 1.0, direction)
    assert result.status == gate.IMPROVED
    assert not result.failed
    assert result.worse_by is not None
    assert result.worse_by < -0.25
    # A small improvement, within the tolerance, is a plain pass.
    assert verdict(0.9 if direction == LOWER else 1.1, 1.0, direction).status == gate.PASS


def test_a_ratio_of_the_baseline_missing_from_the_run_fails() -> None:
    verdicts = gate.compare(
        measured(a=(1.0, LOWER)),
        baseline(a={"value": 1.0, "direction": LOWER}, b={"value": 2.0, "direction": HIGHER}),
    )
    by_name = {v.name: v for v in verdicts}
    assert by_name["a"].status == gate.PASS
    assert by_name["b"].status == gate.MISSING
    assert by_name["b"].failed


def test_a_new_ratio_is_reported_not_failed() -> None:
    verdicts = gate.compare(
        measured(a=(1.0, LOWER), fresh=(3.0, HIGHER)),
        baseline(a={"value": 1.0, "direction": LOWER}),
    )
    (new,) = (v for v in verdicts if v.name == "fresh")
    assert new.status == gate.NEW
    assert not new.failed
    assert new.value == 3.0


def test_only_compares_the_selected_ratios() -> None:
    verdicts = gate.compare(
        measured(a=(1.0, LOWER)),
        baseline(a={"value": 1.0, "direction": LOWER}, b={"value": 2.0, "direction": HIGHER}),
        only=["a"],
    )
    assert [(v.name, v.status) for v in verdicts] == [("a", gate.PASS)]


def test_a_ratio_tolerance_of_its_own_overrides_the_default() -> None:
    result = verdict(1.4, 1.0, LOWER, tolerance=0.5)
    assert (result.status, result.tolerance) == (gate.PASS, 0.5)
    assert verdict(1.6, 1.0, LOWER, tolerance=0.5).status == gate.REGRESSION
    assert verdict(1.15, 1.0, LOWER, tolerance=0.1).status == gate.REGRESSION


def test_a_ratio_not_gated_is_reported_and_never_fails() -> None:
    result = verdict(0.1, 2.0, HIGHER, gate=False, note="depends on the free cores")
    assert result.status == gate.NOT_GATED
    assert not result.failed
    assert result.worse_by == pytest.approx(0.95)
    assert result.note == "depends on the free cores"
    missing = gate.compare({}, baseline(r={"value": 1.0, "direction": LOWER, "gate": False}))
    assert [(v.status, v.failed) for v in missing] == [(gate.NOT_GATED, False)]


def test_a_direction_other_than_the_baselines_is_an_error() -> None:
    with pytest.raises(gate.BaselineError, match="re-record"):
        gate.compare(measured(r=(1.0, HIGHER)), baseline(r={"value": 1.0, "direction": LOWER}))


# --- the baseline file ----------------------------------------------------------------------------


MALFORMED: list[tuple[str, str]] = [
    ("{not json", "not JSON"),
    ("[]", "expected a JSON object"),
    ('{"schema": "other/1", "ratios": {}}', "schema must be"),
    (json.dumps(baseline_document()), "ratios must be a non-empty object"),
    (json.dumps(baseline_document(r={"value": -1, "direction": LOWER})), "r.value"),
    (json.dumps(baseline_document(r={"value": "1.0", "direction": LOWER})), "r.value"),
    (json.dumps(baseline_document(r={"value": 1.0, "direction": "up"})), "r.direction"),
    (json.dumps(baseline_document(r={"value": 1.0, "direction": LOWER, "tolerance": 1.5})), "tol"),
    (json.dumps(baseline_document(r={"value": 1.0, "direction": LOWER, "gate": "no"})), "r.gate"),
    (json.dumps(baseline_document(r={"value": 1.0, "direction": LOWER, "tolerence": 0.3})), "tol"),
]


@pytest.mark.parametrize(("text", "says"), MALFORMED)
def test_a_malformed_baseline_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(gate.BaselineError, match=says):
        gate.load_baseline(path)
    # The command refuses it before anything is timed: exit status 2, one line naming the file.
    assert gate.main(["--baseline", str(path), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gate: {path}:")
    assert says in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_a_missing_baseline_says_how_to_record_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = gate.main(["--baseline", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--update" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--only", "no_such_ratio"], "unknown ratio 'no_such_ratio'"),
        (["--tolerance", "0"], "between 0 and 1"),
        (["--tolerance", "1.5"], "between 0 and 1"),
        (["--tolerance", "lots"], "invalid float value"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert gate.main(argv) == 2
    assert says in capsys.readouterr().err


def test_the_committed_baseline_covers_every_ratio_in_its_direction() -> None:
    committed = gate.load_baseline(gate.DEFAULT_BASELINE)
    gate.check_directions(committed)
    assert set(committed.ratios) == set(gate.RATIO_NAMES)
    for spec in gate.RATIOS:
        entry = committed.ratios[spec.name]
        assert entry.direction == spec.direction
        # A ratio left out of the gate says why.
        assert entry.gate or entry.note, spec.name


# --- the command, on a made-up measurement -------------------------------------------------------


def fake_report(**values: float) -> dict[str, Any]:
    return {
        "schema": gate.SCHEMA,
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": 1.0,
        "machine": {"cpu_count": 2, "cpu_model": "test CPU"},
        "versions": {},
        "config": {"repetitions_done": 3, "target_seconds": 0.01},
        "groups": {},
        "ratios": {
            name: {"value": value, "direction": LOWER, "samples": [value] * 3}
            for name, value in values.items()
        },
    }


def run_fake(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, report: dict[str, Any], *argv: str
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setattr(gate, "measure", lambda only, progress=None: report)
    out = tmp_path / "results" / "gate.json"
    code = gate.main(["--baseline", str(tmp_path / "baseline.json"), "--out", str(out), *argv])
    return code, json.loads(out.read_text(encoding="utf-8"))


def write_a_b_baseline(tmp_path: Path) -> None:
    """A baseline of two lower-is-better ratios, ``a`` and ``b``, both 1.0."""
    document = baseline_document(
        a={"value": 1.0, "direction": LOWER}, b={"value": 1.0, "direction": LOWER}
    )
    (tmp_path / "baseline.json").write_text(json.dumps(document), encoding="utf-8")


def test_a_regression_exits_1_and_the_report_says_which(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_a_b_baseline(tmp_path)
    code, report = run_fake(monkeypatch, tmp_path, fake_report(a=1.3, b=1.1))
    assert code == 1
    assert report["passed"] is False
    assert {v["ratio"]: v["status"] for v in report["verdicts"]} == {
        "a": gate.REGRESSION,
        "b": gate.PASS,
    }
    out = capsys.readouterr().out
    assert "FAIL a: 1.300 is 30.0% worse than the baseline 1.000" in out
    assert "REGRESSION" in out
    assert "benchmark gate passed" not in out

    code, report = run_fake(monkeypatch, tmp_path, fake_report(a=1.2, b=0.5))
    assert code == 0
    assert report["passed"] is True
    assert "benchmark gate passed" in capsys.readouterr().out


def test_update_rewrites_the_baseline_and_keeps_each_ratios_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    document = baseline_document(
        onion_batch_speedup={
            "value": 1.8,
            "direction": HIGHER,
            "gate": False,
            "note": "free cores",
        },
        store_txn_over_group_commit={"value": 9.0, "direction": HIGHER, "tolerance": 0.5},
    )
    (tmp_path / "baseline.json").write_text(json.dumps(document), encoding="utf-8")
    report = fake_report()
    report["ratios"] = {
        "onion_batch_speedup": {"value": 1.2, "direction": HIGHER},
        "store_txn_over_group_commit": {"value": 4.0, "direction": HIGHER},
    }
    code, _ = run_fake(monkeypatch, tmp_path, report, "--update")
    assert code == 0  # 4.0 against 9.0 would fail, but --update is deliberate
    updated = gate.load_baseline(tmp_path / "baseline.json")
    assert updated.ratios["onion_batch_speedup"] == gate.BaselineRatio(
        1.2, HIGHER, None, False, "free cores"
    )
    assert updated.ratios["store_txn_over_group_commit"] == gate.BaselineRatio(4.0, HIGHER, 0.5)
    assert updated.recorded["cpu"] == "test CPU"


def test_update_from_reports_takes_each_ratios_median(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for i, value in enumerate([1.0, 3.0, 2.0]):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(fake_report(a=value, b=10 * value)), encoding="utf-8")
        paths.append(str(path))
    base = tmp_path / "baseline.json"
    assert gate.main(["--update", "--baseline", str(base), "--from", *paths]) == 0
    written = gate.load_baseline(base)
    assert {name: r.value for name, r in written.ratios.items()} == {"a": 2.0, "b": 20.0}
    assert written.recorded["from"] == "median of 3 runs"
    assert "1.000 3.000 2.000  -> 2.000" in capsys.readouterr().out
    # --from measures nothing, so it only rewrites a baseline; a file that is not a report is a
    # usage error.
    assert gate.main(["--baseline", str(base), "--from", *paths]) == 2
    assert "--from goes with --update" in capsys.readouterr().err
    assert gate.main(["--update", "--baseline", str(base), "--from", str(base)]) == 2
    assert "not a report of bench/gate.py" in capsys.readouterr().err


# --- one real run ---------------------------------------------------------------------------------


def test_a_real_run_of_one_cheap_ratio(tmp_path: Path) -> None:
    """The script end to end on the message hash alone. The gate proper compares it with the
    committed baseline; here the baseline says only that Rust's hash is no slower than hashlib's
    (1.0, so it fails below 0.75), which holds on any machine."""
    name = "message_hash_python_over_rust"
    base = tmp_path / "baseline.json"
    base.write_text(
        json.dumps(baseline_document(**{name: {"value": 1.0, "direction": HIGHER}})),
        encoding="utf-8",
    )
    out = tmp_path / "bench-results" / "gate.json"
    command = [sys.executable, str(BENCH / "gate.py"), "--only", name]
    done = subprocess.run(
        [*command, "--baseline", str(base), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "benchmark gate passed" in done.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["schema"] == gate.SCHEMA
    assert report["passed"] is True
    assert list(report["ratios"]) == [name]
    ratio = report["ratios"][name]
    assert ratio["direction"] == HIGHER
    assert len(ratio["samples"]) == report["config"]["repetitions_done"] >= gate.MIN_REPEAT
    assert ratio["min"] <= ratio["value"] <= ratio["max"]
    assert ratio["value"] > 0.75
    candidates = report["groups"]["message-hash"]["candidates"]
    assert set(candidates) == {"python", "rust"}
    assert all(c["loops"] >= 1 and c["median_us"] > 0 for c in candidates.values())
    (row,) = (line for line in done.stdout.splitlines() if line.startswith(name))
    assert row.split()[-1] in {gate.PASS, gate.IMPROVED}


def test_a_regression_is_measured_again_alone_and_fails_only_if_it_holds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_a_b_baseline(tmp_path)
    out = tmp_path / "gate.json"

    def run_with(
        runs: list[dict[str, Any]], *argv: str
    ) -> tuple[int, dict[str, Any], list[list[str]]]:
        asked: list[list[str]] = []

        def measure(only: list[str], progress: Any = None) -> dict[str, Any]:
            asked.append(list(only))
            return runs[len(asked) - 1]

        monkeypatch.setattr(gate, "measure", measure)
        baseline = ["--baseline", str(tmp_path / "baseline.json"), "--out", str(out)]
        code = gate.main([*baseline, *argv])
        return code, json.loads(out.read_text(encoding="utf-8")), asked

    # Past its tolerance once (1.3), within it when measured again (1.1): passes, says so.
    code, report, asked = run_with([fake_report(a=1.3, b=1.1), fake_report(a=1.1)])
    assert code == 0
    assert asked == [[], ["a"]]  # measured again alone
    assert {v["ratio"]: v["status"] for v in report["verdicts"]} == {
        "a": gate.UNCONFIRMED,
        "b": gate.PASS,
    }
    assert report["confirmations"][0]["verdicts"][0]["value"] == 1.1
    printed = capsys.readouterr().out
    assert "measured again: a 1.100 (within its tolerance)" in printed
    assert "benchmark gate passed" in printed

    # Past it both times: fails, with both values in the report.
    code, report, asked = run_with([fake_report(a=1.3, b=1.1), fake_report(a=1.4)])
    assert code == 1
    assert asked == [[], ["a"]]
    assert report["verdicts"][0]["status"] == gate.REGRESSION
    assert report["confirmations"][0]["verdicts"][0]["status"] == gate.REGRESSION
    assert "still past its tolerance" in capsys.readouterr().out

    # --confirm 0: the first measurement decides; --confirm 2: a third can clear it.
    code, _, asked = run_with([fake_report(a=1.3, b=1.1)], "--confirm", "0")
    assert (code, asked) == (1, [[]])
    runs = [fake_report(a=1.3, b=1.1), fake_report(a=1.3), fake_report(a=1.0)]
    code, report, asked = run_with(runs, "--confirm", "2")
    assert (code, asked) == (0, [[], ["a"], ["a"]])
    assert len(report["confirmations"]) == 2
    assert gate.main(["--confirm", "-1"]) == gate.EXIT_USAGE

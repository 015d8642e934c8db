"""Safety numbers are the same on both sides and differ between pairs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from veil.client.safety import safety_number
from veil.errors import InvalidSessionIdError
from veil.identity import Identity


def test_both_sides_compute_the_same_sixty_digits() -> None:
    a, b, c = (Identity.generate().session_id for _ in range(3))
    number = safety_number(a, b)
    assert number == safety_number(b, a)
    groups = number.split()
    assert len(groups) == 12
    assert all(len(g) == 5 and g.isdigit() for g in groups)
    assert number != safety_number(a, c)


def test_the_number_of_a_known_pair_does_not_change() -> None:
    # Pinned when the scheme was written: a change here changes every user's numbers.
    a = Identity.from_seed(bytes(16)).session_id
    b = Identity.from_seed(bytes([1]) * 16).session_id
    assert (
        safety_number(a, b)
        == "66887 60668 94048 45722 73331 50076 84968 96489 25752 52995 17190 13293"
    )
    assert safety_number(a.upper(), b) == safety_number(a, b)


def test_a_malformed_session_id_is_refused() -> None:
    with pytest.raises(InvalidSessionIdError):
        safety_number("05abc", Identity.generate().session_id)


def test_the_command_shows_the_same_number_on_both_sides(tmp_path: Path) -> None:
    def veil(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "veil", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    veil("init", "--home", str(tmp_path / "a"))
    veil("init", "--home", str(tmp_path / "b"))
    id_a = veil("whoami", "--home", str(tmp_path / "a")).split()[0]
    id_b = veil("whoami", "--home", str(tmp_path / "b")).split()[0]
    shown_a = veil("safety-number", id_b, "--home", str(tmp_path / "a"))
    shown_b = veil("safety-number", id_a, "--home", str(tmp_path / "b"))
    assert shown_a == shown_b
    assert " ".join(shown_a.split("\n\n")[0].split()) == safety_number(id_a, id_b)

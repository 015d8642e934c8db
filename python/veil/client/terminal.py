"""Text from the network made safe for a terminal, before any of it is shown.

Everything another account or a node sends — message bodies, display names, the ``message`` of a
node's error, a network's name in a consensus — is hostile until cleaned: an ESC starts an escape
sequence that can rewrite the screen or set the window title, and the Unicode bidirectional
overrides can make text read as something else. :func:`printable` replaces each character a
terminal would act on with U+FFFD; :func:`error_line` also keeps an error to one bounded line.
"""

from __future__ import annotations

__all__ = ["error_line", "printable"]

# C0 and C1 controls (but tab and newline), DEL, and the bidirectional overrides and isolates.
_UNSAFE = {c: 0xFFFD for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}
_UNSAFE.update(dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], 0xFFFD))

ERROR_LINE_MAX = 400


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with every character a terminal would act on replaced by U+FFFD (and, for a
    ``one_line`` label such as a display name, newlines and tabs too, cut to 64 characters).
    Applied to what others send as it arrives, so no command can print it raw."""
    cleaned = text.translate(_UNSAFE)
    if one_line:
        cleaned = cleaned.replace("\n", "\ufffd").replace("\t", " ")[:64]
    return cleaned


def error_line(text: str) -> str:
    """An error message as one line on a terminal: cleaned, newlines and tabs made spaces, at
    most ``ERROR_LINE_MAX`` characters."""
    cleaned = printable(text).replace("\n", " ").replace("\t", " ")
    return cleaned if len(cleaned) <= ERROR_LINE_MAX else cleaned[: ERROR_LINE_MAX - 1] + "…"

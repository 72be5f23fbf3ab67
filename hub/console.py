"""The command line's rich consoles: wrapped and cut to the terminal's width only when
they write to a terminal. Output piped or redirected is data and is never truncated to
rich's default 80 columns (``0.0.2.4.1.1.12.…``)."""

from __future__ import annotations

import sys

from rich.console import Console

#: the width of a console that does not write to a terminal
UNBOUNDED_WIDTH = 1_000_000


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return Console(stderr=stderr, width=None if terminal else UNBOUNDED_WIDTH)

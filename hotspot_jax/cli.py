"""Shared plumbing for command-line entry points: clean errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from hotspot_jax.errors import HotspotError


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; print a HotspotError as one ``error:`` line (exit 2), Ctrl-C as exit 130."""
    try:
        code = main(argv)
    except HotspotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)

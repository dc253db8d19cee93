"""Placeholder: the transcoder-client CLI and library (issue 3) are being written."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Not yet available."""
    raise SystemExit("transcoder-client: not yet available")

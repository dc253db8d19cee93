"""Placeholder: filled in by the updates work (see transcoder/imap/server.py)."""

from __future__ import annotations


class UpdatesMixin:
    """Mixin for TranscodingIMAP4Server."""

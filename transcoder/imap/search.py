"""Placeholder: filled in by the search work (see transcoder/imap/server.py)."""

from __future__ import annotations


class SearchMixin:
    """Mixin for TranscodingIMAP4Server."""

"""Placeholder: filled in by the fetch work (see transcoder/imap/server.py)."""

from __future__ import annotations


class FetchMixin:
    """Mixin for TranscodingIMAP4Server."""

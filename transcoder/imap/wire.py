"""Placeholder: filled in by the wire work (see transcoder/imap/server.py)."""

from __future__ import annotations


class WireMixin:
    """Mixin for TranscodingIMAP4Server."""

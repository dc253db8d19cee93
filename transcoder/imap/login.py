"""Placeholder: filled in by the login work (see transcoder/imap/server.py)."""

from __future__ import annotations


class LoginMixin:
    """Mixin for TranscodingIMAP4Server."""

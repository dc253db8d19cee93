"""Placeholder: filled in by the mailboxes work (see transcoder/imap/server.py)."""

from __future__ import annotations


class MailboxesMixin:
    """Mixin for TranscodingIMAP4Server."""

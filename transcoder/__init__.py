"""imap-transcoder: an IMAP4 server encrypting each user's mail to their own key at FETCH time."""

__version__ = "0.1.0"

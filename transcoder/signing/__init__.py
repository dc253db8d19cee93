"""Signing with the server's signing keys (issue 16, signed views): sans-IO building blocks."""

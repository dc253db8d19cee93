"""Scanning messages at the gateway (issue 16): clamd, after decryption."""

from transcoder.scan.clamd import ClamdScanner, MessageInfected, ScannerUnavailable, Verdict

__all__ = ["ClamdScanner", "MessageInfected", "ScannerUnavailable", "Verdict"]

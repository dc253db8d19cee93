"""Scanning messages at the gateway (issue 16): clamd, after decryption.

:mod:`.clamd` is the INSTREAM client (APPEND calls it before the store);
:mod:`.delivery` holds what MDAs deliver into ``new/`` until it is scanned.
"""

from transcoder.scan.clamd import ClamdScanner, MessageInfected, ScannerUnavailable, Verdict

__all__ = ["ClamdScanner", "MessageInfected", "ScannerUnavailable", "Verdict"]

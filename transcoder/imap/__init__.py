"""Twisted IMAP4 adapter: the server, its fixes to Twisted's IMAP4Server, the FETCH view seam."""

from transcoder.imap.server import TranscodingIMAP4Factory, TranscodingIMAP4Server
from transcoder.imap.settings import ServerSettings

__all__ = ["ServerSettings", "TranscodingIMAP4Factory", "TranscodingIMAP4Server"]

"""Transcoders: :class:`ITranscoder`, the registry (built-ins plus entry points), selection.

The built-in recipe is :class:`SmimeTranscoder` (:mod:`transcoder.transcoders.smime`);
plugin authors test theirs with :mod:`transcoder.testing`.
No twisted import anywhere below this package.
"""

from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import (
    ISizePredictor,
    ITranscoder,
    SizePredictor,
    Transcoder,
    TranscodeRequest,
    TranscodeResult,
)
from transcoder.transcoders.registry import (
    GROUP,
    LoadFailure,
    TranscoderRegistry,
    check_transcoder,
)
from transcoder.transcoders.selection import Selection, select_transcoder, usable_keys
from transcoder.transcoders.smime import SmimeTranscoder

__all__ = [
    "GROUP",
    "ISizePredictor",
    "ITranscoder",
    "LoadFailure",
    "Selection",
    "SizePredictor",
    "SmimeTranscoder",
    "TranscodeFailed",
    "TranscodeRequest",
    "TranscodeResult",
    "Transcoder",
    "TranscoderRegistry",
    "check_transcoder",
    "select_transcoder",
    "usable_keys",
]

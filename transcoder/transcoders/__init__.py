"""Transcoders: :class:`ITranscoder`, the registry (built-ins plus entry points), selection.

The built-in recipe is :class:`SmimeTranscoder` (:mod:`transcoder.transcoders.smime`);
plugin authors test theirs with :mod:`transcoder.testing`.  Every random
octet a transcoder uses comes from its request's :class:`IRandomSource`
(:mod:`transcoder.transcoders.derivation`: derived from a :class:`ViewSecret`
on the server, :class:`SystemRandom` for embedders without one).
No twisted import anywhere below this package.
"""

from transcoder.transcoders.derivation import (
    DerivedRandom,
    IRandomSource,
    RandomSource,
    SystemRandom,
    ViewIdentity,
    ViewSecret,
)
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
    "DerivedRandom",
    "IRandomSource",
    "ISizePredictor",
    "ITranscoder",
    "LoadFailure",
    "RandomSource",
    "Selection",
    "SizePredictor",
    "SmimeTranscoder",
    "SystemRandom",
    "TranscodeFailed",
    "TranscodeRequest",
    "TranscodeResult",
    "Transcoder",
    "TranscoderRegistry",
    "ViewIdentity",
    "ViewSecret",
    "check_transcoder",
    "select_transcoder",
    "usable_keys",
]

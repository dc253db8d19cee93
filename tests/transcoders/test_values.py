"""The values and error of the transcoder interface."""

from __future__ import annotations

import dataclasses
import io
import os
from datetime import datetime

import pytest

from tests.keys.certs import NOW
from transcoder.errors import ClientError
from transcoder.transcoders import TranscodeFailed, TranscodeRequest, TranscodeResult


def test_request_requires_an_aware_now() -> None:
    """A naive ``now`` is a programming error, caught when the request is made."""
    with pytest.raises(ValueError, match="timezone-aware"):
        TranscodeRequest(io.BytesIO(), 0, (), datetime(2026, 1, 1), os.urandom)


def test_request_rejects_negative_size_and_freezes_keys() -> None:
    """Sizes are never negative; keys given as a list are stored as a tuple; values are frozen."""
    with pytest.raises(ValueError, match="negative"):
        TranscodeRequest(io.BytesIO(), -1, (), NOW, os.urandom)
    request = TranscodeRequest(io.BytesIO(), 0, [], NOW, os.urandom)  # type: ignore[arg-type]
    assert request.keys == () and request.obscure_subject is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.size = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TranscodeResult(1, "a/b").size = 2  # type: ignore[misc]


def test_transcode_failed_is_opaque_to_the_client() -> None:
    """The client sees NO [TRANSCODE-FAILED] with fixed text; the detail stays for the log."""
    error = TranscodeFailed("RSA key of 1024 bits for 3f2a...")
    assert isinstance(error, ClientError)
    assert (error.response, error.code) == ("NO", "TRANSCODE-FAILED")
    assert error.text == "message could not be transcoded"
    assert "1024" in error.detail and "1024" not in str(error)

"""Fixtures of the CMS encoder tests: generated keys and certificates, a gpgsm home."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cms.parties import Party, generate_parties
from tests.cms.peers import GpgsmHome


@pytest.fixture(scope="session")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    """RSA-3072, RSA-2048, P-256, P-384 and P-521 parties, generated once per session."""
    return generate_parties(tmp_path_factory.mktemp("cms-parties"))


@pytest.fixture(scope="session")
def gpgsm_home(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> Iterator[GpgsmHome]:
    """A GNUPGHOME holding the RSA-3072 party's key, for ``gpgsm --decrypt``."""
    home = GpgsmHome(tmp_path_factory.mktemp("gpgsm") / "home", parties["rsa3072"])
    yield home
    home.close()

"""The values and errors of the XKEY client library (frozen dataclasses, one error class).

Everything the library hands back is immutable: :class:`KeyInfo` for each
``* XKEY (...)`` key response, :class:`PolicyInfo` for ``* XKEY POLICY (...)``
(docs/design.md, "Protocol: XKEY").  Every failure is an :class:`XKeyError`
carrying the response code the server sent (``XKEY-ADDRESS``, ...) or one of
the client's own codes listed on the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from transcoder.errors import ClientError

#: Policy modes (``XKEY POLICY MODE ...``).
MODES = ("ALWAYS", "OFF")
#: Key formats (``FORMAT`` of a key, ``XKEY POLICY FORMAT ...``).
FORMATS = ("SMIME", "OPENPGP")


class XKeyError(ClientError):
    """The server refused an XKEY request, or the exchange went wrong.

    ``code`` is the response code of the server's tagged NO/BAD
    (``XKEY-INVALID``, ``XKEY-ADDRESS``, ``XKEY-TOOBIG``, ``XKEY-NOKEY``,
    ``CLIENTBUG``, ...; ``None`` when it sent none) or one of the client's own:
    ``PROTOCOL`` (the server's response was malformed) and ``UNSUPPORTED``
    (the server does not advertise XKEY).  ``response`` is ``NO`` or ``BAD``;
    ``text`` is the human-readable explanation.
    """

    def __init__(self, code: str | None, text: str, *, response: str = "NO") -> None:
        super().__init__(text or "(no explanation given)", code=code)
        self.response = response

    def __str__(self) -> str:
        return f"{self.code}: {self.text}" if self.code else self.text

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.text), {"response": self.response})


class XKeyConnectionError(XKeyError):
    """Connecting, TLS or logging in failed, or the connection broke mid-command.

    Codes: ``CONNECT`` (no connection), ``TLS`` (handshake or certificate
    verification failed, or STARTTLS refused), ``PRIVACYREQUIRED`` (the client
    refused to send a password unencrypted to a non-loopback peer),
    ``AUTHENTICATIONFAILED`` (or the server's own code for a refused login),
    ``CONNECTION`` (the connection broke).
    """


@dataclass(frozen=True)
class KeyInfo:
    """One stored key, as ``XKEY LIST`` describes it.

    ``format`` is ``SMIME`` or ``OPENPGP``; ``fingerprint`` is hex as the
    server sent it (pass it back to :meth:`XKeyClient.retire`); ``not_after``
    is timezone-aware UTC, or ``None`` when the key never expires; ``usage``
    holds ``ENCRYPT`` and/or ``SIGN``; ``status`` is ``ACTIVE``, ``RETIRED``
    or ``EXPIRED``.  Values a newer server may add (another format, status or
    usage) are passed through as text rather than refused, so an older client
    keeps working; compare against the names above.
    """

    format: str
    fingerprint: str
    addresses: tuple[str, ...]
    not_after: datetime | None
    usage: tuple[str, ...]
    status: str

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping (``not_after`` as ``YYYY-MM-DDTHH:MM:SSZ`` or null)."""
        return {
            "format": self.format,
            "fingerprint": self.fingerprint,
            "addresses": list(self.addresses),
            "not_after": format_timestamp(self.not_after),
            "usage": list(self.usage),
            "status": self.status,
        }


@dataclass(frozen=True)
class PutResult:
    """What ``XKEY PUT`` reported: the key stored, then each key it superseded.

    ``stored`` is ``None`` from a server that describes no key; ``superseded``
    holds the keys of the same format and role that were in force and are now
    ``RETIRED`` (docs/xkey.md, "XKEY PUT") -- empty for a first key or a refresh.
    """

    stored: KeyInfo | None
    superseded: tuple[KeyInfo, ...] = ()


@dataclass(frozen=True)
class ServerKeyInfo:
    """One of the server's own current keys, as ``XKEY SERVER`` publishes it (issue 16).

    ``usage`` is ``("ENCRYPT",)`` (encrypt what you APPEND to it) or
    ``("SIGN",)`` (the server signs with it) for S/MIME, both for the one
    OpenPGP key (its subkeys, in ``subkeys``, are separate: encryption first);
    ``material`` the PEM certificate or armored public key.
    """

    format: str
    usage: tuple[str, ...]
    fingerprint: str
    subkeys: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    material: str

    def file_name(self) -> str:
        """Where ``transcoder-client server-keys`` saves it."""
        if self.format == "OPENPGP":
            return "server-openpgp.asc"
        role = "encrypt" if "ENCRYPT" in self.usage else "sign"
        return f"server-smime-{role}.pem"


@dataclass(frozen=True)
class PolicyInfo:
    """The account's transcoding policy, as ``XKEY POLICY`` reports it.

    ``mode`` is ``ALWAYS`` or ``OFF``; ``format`` is ``SMIME``, ``OPENPGP``,
    or ``None`` when the server has none to report (no key stored yet);
    ``sign`` whether views are signed by the server (``SIGN``, issue 16),
    ``None`` from a server that does not say.
    """

    mode: str
    format: str | None
    sign: bool | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {"mode": self.mode, "format": self.format, "sign": self.sign}


def format_timestamp(when: datetime | None) -> str | None:
    """``when`` as the protocol writes it (``2027-01-31T00:00:00Z``), or ``None``."""
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")

""":class:`XKeyClient`: the XKEY command (docs/design.md, "Protocol: XKEY") over stdlib imaplib.

Connecting (:meth:`XKeyClient.connect`) follows RFC 3501 section 11.1 and
RFC 8314: the server certificate is verified against the system's trust
store unless the caller passes its own ``ssl_context``; a password is only
ever sent under TLS, or in the clear to a loopback peer.
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import ssl
from types import TracebackType
from typing import Literal

from transcoder.client.convert import ConversionInfo, ConvertedPart, conversions, convert_part
from transcoder.client.model import (
    FORMATS,
    MODES,
    KeyInfo,
    PolicyInfo,
    PutResult,
    ServerKeyInfo,
    XKeyConnectionError,
    XKeyError,
)
from transcoder.client.syntax import (
    parse_server_keys,
    parse_status_text,
    parse_xkey_responses,
)

Security = Literal["starttls", "tls", "plain"]

#: Seconds a connect or a single response may take before we give up.
DEFAULT_TIMEOUT = 30.0

# imaplib refuses commands missing from its state table; XKEY is valid in the
# authenticated and selected states (docs/design.md).  setdefault leaves any entry
# the application made itself alone.
imaplib.Commands.setdefault("XKEY", ("AUTH", "SELECTED"))


def is_loopback(address: str) -> bool:
    """Whether ``address`` (a peer IP as ``getpeername`` gives it) is loopback."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def normalize_fingerprint(fingerprint: str) -> str:
    """``fingerprint`` without the spaces or colons people paste, checked to be hex.

    Only hex digits go on the wire, so no fingerprint can smuggle a second
    command (CRLF) into the line.
    """
    compact = "".join(fingerprint.replace(":", " ").split())
    if not compact or any(c not in "0123456789abcdefABCDEF" for c in compact):
        raise ValueError(f"not a hex fingerprint: {fingerprint!r}")
    return compact


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value.upper() not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value.upper()


def _error_text(exc: BaseException) -> str:
    """imaplib's error text (its LOGIN error carries the server's text as bytes)."""
    arg = exc.args[0] if exc.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _open(
    host: str, port: int, security: str, context: ssl.SSLContext, timeout: float
) -> imaplib.IMAP4:
    """A connection, under TLS unless ``security`` is ``plain``."""
    where = f"{host}:{port}"
    try:
        if security == "tls":
            return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
        imap = imaplib.IMAP4(host, port, timeout=timeout)
    except ssl.SSLError as exc:
        raise XKeyConnectionError("TLS", f"TLS with {where} failed: {exc}") from exc
    except (OSError, imaplib.IMAP4.error) as exc:
        raise XKeyConnectionError("CONNECT", f"cannot connect to {where}: {exc}") from exc
    if security == "starttls":
        try:
            imap.starttls(ssl_context=context)
        except (OSError, imaplib.IMAP4.error) as exc:
            _shutdown(imap)
            raise XKeyConnectionError("TLS", f"STARTTLS with {where} failed: {exc}") from exc
    return imap


def _shutdown(imap: imaplib.IMAP4) -> None:
    """Close the socket; it may be broken already."""
    with contextlib.suppress(OSError):
        imap.shutdown()


def _login(imap: imaplib.IMAP4, user: str, password: str) -> None:
    """Log in: AUTHENTICATE PLAIN (UTF-8 safe, RFC 4616) when offered, else LOGIN."""
    try:
        if "AUTH=PLAIN" in imap.capabilities:
            imap.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
        else:
            imap.login(user, password)
    except imaplib.IMAP4.abort as exc:
        raise XKeyConnectionError("CONNECTION", _error_text(exc)) from exc
    except UnicodeError as exc:
        # imaplib's LOGIN encodes its arguments as ASCII (RFC 3501 quoted strings).
        raise XKeyConnectionError(
            "AUTHENTICATIONFAILED",
            "the server offers no AUTHENTICATE PLAIN and LOGIN cannot carry a non-ASCII "
            "user name or password",
        ) from exc
    except imaplib.IMAP4.error as exc:
        code, text = parse_status_text(_error_text(exc))
        raise XKeyConnectionError(code or "AUTHENTICATIONFAILED", text) from exc
    except OSError as exc:
        raise XKeyConnectionError("CONNECTION", str(exc)) from exc


class XKeyClient:
    """Provision and manage one's own keys on a server that speaks XKEY.

    Wraps an ``imaplib.IMAP4`` that is already logged in (the constructor does
    no I/O), or use :meth:`connect`.  Every method raises :class:`XKeyError`
    when the server refuses (with its response code) and
    :class:`XKeyConnectionError` when the connection breaks.  Use it as a
    context manager to log out at the end::

        with XKeyClient.connect("imap.example.org", 993, user, password, "tls") as xkey:
            xkey.provision(Path("me.crt").read_bytes())
            print(xkey.keys())
    """

    def __init__(self, imap: imaplib.IMAP4) -> None:
        self.imap = imap
        self._closed = False

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        user: str,
        password: str,
        security: Security = "starttls",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> XKeyClient:
        """Connect, secure, log in and check that the server offers XKEY.

        ``security``: ``starttls`` (RFC 3501 section 6.2.1), ``tls`` (implicit
        TLS, RFC 8314) or ``plain`` -- which refuses to send the password unless
        the peer is a loopback address.  ``ssl_context`` defaults to
        ``ssl.create_default_context()``: the system CAs, hostname checked.
        """
        how = _choice(security, ("STARTTLS", "TLS", "PLAIN"), "security").lower()
        context = ssl_context or ssl.create_default_context()
        imap = _open(host, port, how, context, timeout)
        try:
            if how == "plain" and not is_loopback(imap.sock.getpeername()[0]):
                raise XKeyConnectionError(
                    "PRIVACYREQUIRED",
                    f"refusing to send the password unencrypted to {host}: use STARTTLS or TLS",
                )
            _login(imap, user, password)
            client = cls(imap)
            client.require_capability()
        except BaseException:
            _shutdown(imap)
            raise
        return client

    def require_capability(self) -> None:
        """Ask CAPABILITY; raise ``XKeyError("UNSUPPORTED")`` unless XKEY is listed.

        Ask after login: servers advertise XKEY in the authenticated state only.
        """
        try:
            typ, data = self.imap.capability()
        except imaplib.IMAP4.error as exc:
            raise XKeyError("PROTOCOL", f"CAPABILITY failed: {_error_text(exc)}") from exc
        except OSError as exc:
            raise XKeyConnectionError("CONNECTION", str(exc)) from exc
        words = b" ".join(d for d in data if isinstance(d, bytes)).upper().split()
        if typ != "OK" or b"XKEY" not in words:
            raise XKeyError("UNSUPPORTED", "the server does not offer XKEY (no XKEY capability)")

    def _run(self, *args: str, literal: bytes | None = None) -> list[bytes | tuple[bytes, bytes]]:
        """Send ``XKEY args`` (plus ``literal`` as a synchronizing literal); return
        the untagged XKEY responses, or raise with the server's refusal."""
        imap = self.imap
        imap.response("XKEY")  # drop any stale untagged XKEY responses
        try:
            if literal is not None:
                # imaplib appends " {n}" to the line, waits for "+" and sends these
                # octets unchanged (RFC 3501 section 4.3); typeshed says str, but
                # imaplib writes it to the socket as-is, so it must be bytes.
                imap.literal = literal  # type: ignore[assignment]
            typ, data = imap.xatom("XKEY", *args)
        except imaplib.IMAP4.abort as exc:
            raise XKeyConnectionError("CONNECTION", _error_text(exc)) from exc
        except imaplib.IMAP4.error as exc:
            # imaplib raises on a tagged BAD: "XKEY command error: BAD [b'text']".
            text = _error_text(exc).partition(" BAD ")[2].removeprefix("[b'").removesuffix("']")
            code, text = parse_status_text(text or _error_text(exc))
            raise XKeyError(code, text, response="BAD") from exc
        except OSError as exc:
            raise XKeyConnectionError("CONNECTION", str(exc)) from exc
        _, untagged = imap.response("XKEY")
        if typ != "OK":
            code, text = parse_status_text(data[-1] if data and data[-1] else b"")
            raise XKeyError(code, text)
        return [item for item in untagged if item is not None]

    def provision(self, data: bytes) -> KeyInfo | None:
        """``XKEY PUT``: store a certificate (PEM/DER/PKCS#7) or OpenPGP public key.

        ``data`` goes as raw octets (DER and binary OpenPGP are not text).
        Returns the stored key when the server describes it in a ``* XKEY``
        response, as imap-transcoder does; ``None`` from a server that does not.
        :meth:`provision_key` also tells which keys it superseded.
        """
        return self.provision_key(data).stored

    def provision_key(self, data: bytes) -> PutResult:
        """``XKEY PUT``, reporting the stored key and each key it superseded.

        The server answers the stored key's ``* XKEY`` first, then one
        ``* XKEY (... STATUS RETIRED)`` per key the new one retired.
        """
        keys, _ = parse_xkey_responses(self._run("PUT", literal=bytes(data)))
        if not keys:
            return PutResult(None)
        stored, *rest = keys
        return PutResult(stored, tuple(k for k in rest if k.status == "RETIRED"))

    def keys(self) -> list[KeyInfo]:
        """``XKEY LIST``: every key stored for this account, retired ones included."""
        keys, _ = parse_xkey_responses(self._run("LIST"))
        return keys

    def retire(self, fingerprint: str) -> None:
        """``XKEY DELETE``: retire a key (the server keeps it in its history)."""
        self._run("DELETE", normalize_fingerprint(fingerprint))

    def server_keys(self) -> list[ServerKeyInfo]:
        """``XKEY SERVER``: the server's current public keys (encrypt APPENDs to them)."""
        return parse_server_keys(self._run("SERVER"))

    def policy(self) -> PolicyInfo:
        """``XKEY POLICY``: the account's transcoding policy."""
        _, policies = parse_xkey_responses(self._run("POLICY"))
        if not policies:
            raise XKeyError("PROTOCOL", "no * XKEY POLICY response to XKEY POLICY")
        return policies[-1]

    def set_policy(
        self, mode: str | None = None, format: str | None = None, sign: bool | None = None
    ) -> PolicyInfo:
        """Set ``FORMAT`` (``SMIME``/``OPENPGP``), then ``MODE`` (``ALWAYS``/``OFF``), then
        ``SIGN`` (``True``: ON); return the policy now in force.  The format goes first so
        that ``MODE ALWAYS`` is checked against the key format it will use."""
        steps = []
        if format is not None:
            steps.append(("FORMAT", _choice(format, FORMATS, "format")))
        if mode is not None:
            steps.append(("MODE", _choice(mode, MODES, "mode")))
        if sign is not None:
            steps.append(("SIGN", "ON" if sign else "OFF"))
        for name, value in steps:
            self._run("POLICY", name, value)
        return self.policy()

    def conversions(self, source: str = "*", target: str = "*") -> list[ConversionInfo]:
        """``CONVERSIONS``: what the server converts for this user (RFC 5259 section 5)."""
        return conversions(self.imap, source, target)

    def convert(
        self,
        mailbox: str,
        uid: int,
        section: str,
        target: str,
        params: tuple[tuple[str, str], ...] = (),
    ) -> ConvertedPart:
        """``UID CONVERT``: one body part converted, e.g. to ``application/pkcs7-mime``
        (:func:`transcoder.client.convert.convert_part`)."""
        return convert_part(self.imap, mailbox, uid, section, target, params)

    def close(self) -> None:
        """Log out and close the connection (idempotent; never raises)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.imap.logout()
        except (imaplib.IMAP4.error, OSError):
            _shutdown(self.imap)

    def __enter__(self) -> XKeyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

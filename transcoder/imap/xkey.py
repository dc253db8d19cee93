"""XKEY: users provision their keys and set their policy over IMAP (docs/design.md, XKEY).

The reference for client authors is ``docs/xkey.md``; the grammar lives in
:mod:`transcoder.imap.xkey_syntax`.  What :class:`XKeyMixin` guarantees:

* XKEY runs in the authenticated and selected states only; before login the
  wire mixin answers ``BAD`` (RFC 3501 section 3).  ``XKEY`` is advertised
  in CAPABILITY from login on -- only when the server has a keystore
  (:class:`KeyAccess`) and the logged-in account has an ``address``.
  Otherwise XKEY is answered ``NO [CANNOT]``, before any literal is read.
* A session only ever reads and changes the keys and policy of its own
  account, ``self.account.address``: no request names an account.
* ``PUT``'s key arrives as raw octets, from a quoted string or a literal.  A
  literal over ``settings.max_key_size`` is refused ``NO [XKEY-TOOBIG]``
  before the continuation request, so nothing of it is read (a
  non-synchronizing one is discarded by the wire mixin, RFC 7888 section 4).
* Validation (gpg subprocesses, certificate parsing) and every keystore call
  run in the keystore's thread pool, never on the reactor thread; commands
  pipelined behind an XKEY wait for its answer (RFC 3501 section 5.5).
* Failures: ``NO [XKEY-INVALID|XKEY-ADDRESS|XKEY-TOOBIG|XKEY-NOKEY] <why>``,
  ``BAD`` for syntax.  Nothing is stored on any failure.  Every operation,
  refusals included, is audited by the keystore with the peer address.
* Successful requests answer their result before the tagged ``OK``: PUT the
  stored key's ``* XKEY (...)`` followed by one ``* XKEY (... STATUS
  RETIRED)`` per key it superseded (so a user learns that a test
  certificate retired their real one), DELETE the retired key's, LIST one
  per key, POLICY (shown or changed) ``* XKEY POLICY (...)``, SERVER one
  ``* XKEY SERVER (...)`` per current server key with its public material in
  a literal (issue 16).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from transcoder.errors import ClientError
from transcoder.imap.mailbox_base import MailboxCommandMixin
from transcoder.imap.settings import ServerSettings
from transcoder.imap.xkey_syntax import (
    DeleteKey,
    KeyListing,
    KeyLiteralAhead,
    ListKeys,
    PolicyListing,
    PutKey,
    ServerKeys,
    SetPolicy,
    ShowPolicy,
    XKeyRequest,
    key_response,
    parse_arguments,
    policy_response,
    server_key_response,
)
from transcoder.keys.async_store import AsyncKeyStore, clock_now
from transcoder.keys.errors import KeyTooBig
from transcoder.keys.model import Policy, StoredKey
from transcoder.keys.provisioning import Provisioned, provision_key
from transcoder.keys.server_keys_files import ServerKeyFiles
from transcoder.signing.signers import ServerSigning

_REQUEST_NAMES: dict[type, bytes] = {
    PutKey: b"PUT",
    ListKeys: b"LIST",
    DeleteKey: b"DELETE",
    ShowPolicy: b"POLICY",
    SetPolicy: b"POLICY",
    ServerKeys: b"SERVER",
}


@dataclass(frozen=True)
class KeyAccess:
    """What XKEY needs of the key layer: the keystore, how to validate, and the time.

    ``store`` runs every call in its thread pool.  ``trust_anchors`` (from
    ``--smime-ca``) make certificates need a chain to one of them; empty, any
    certificate passing the other checks is accepted, self-signed included.
    ``clock`` is the reactor (a :class:`~twisted.internet.task.Clock` in tests).
    ``server`` holds the server's own key pairs (issue 16): ``XKEY SERVER``
    publishes them and APPEND decrypts with them; ``None``: neither.
    ``signing`` signs views (``XKEY POLICY SIGN``) with the current signing
    keys of ``server`` and knows the server's ``--sign-views`` default;
    ``None``: views are never signed (SIGN ON is refused).
    """

    store: AsyncKeyStore
    clock: IReactorTime
    trust_anchors: tuple[x509.Certificate, ...] = ()
    gpg_binary: str = "gpg"
    server: ServerKeyFiles | None = None
    signing: ServerSigning | None = None

    @property
    def sign_default(self) -> bool:
        """The server's ``--sign-views`` default (off without signing)."""
        return self.signing is not None and self.signing.default

    def now(self) -> datetime:
        """The clock's time, as the keystore takes it."""
        return clock_now(self.clock)

    def provision(
        self,
        account: str,
        data: bytes,
        *,
        max_bytes: int,
        origin: Mapping[str, str] | None = None,
    ) -> Deferred[Provisioned]:
        """Validate and store ``data`` as ``account``'s key, in the pool (see ``provision_key``)."""
        return self.store.run(
            provision_key,
            self.store.store,
            account,
            data,
            self.now(),
            trust_anchors=self.trust_anchors,
            gpg_binary=self.gpg_binary,
            max_bytes=max_bytes,
            origin=origin,
        )


class XKeyMixin(MailboxCommandMixin):
    """The XKEY command and capability for TranscodingIMAP4Server (see the module doc)."""

    #: The key layer; ``None``: XKEY is not offered.
    keys: KeyAccess | None = None

    # Provided by the other mixins (declared for the type checker only).
    settings: ServerSettings
    _peer_text: Callable[[], str]
    _begin_literal: Callable[[int, int, Callable[[int], Any]], Any]

    def capabilities(self) -> dict[bytes, Any]:
        """Add ``XKEY`` once logged in, when this account can use it."""
        caps: dict[bytes, Any] = super().capabilities()
        if self.state in ("auth", "select") and self._xkey_address() is not None:
            caps[b"XKEY"] = None
        return caps

    def _xkey_address(self) -> str | None:
        """The account's address when XKEY is available to it, else ``None``."""
        address = getattr(self.account, "address", None)
        if self.keys is None or not isinstance(address, str) or not address:
            return None
        return address

    def _xkey_access(self) -> tuple[KeyAccess, str]:
        """The key layer and the account's address; NO [CANNOT] when XKEY is unavailable."""
        address = self._xkey_address()
        if self.keys is None or address is None:
            raise ClientError("XKEY is not available for this account", code="CANNOT")
        return self.keys, address

    # -- parsing -----------------------------------------------------------------

    def arg_xkey(self, line: bytes | None) -> Any:
        """XKEY's arguments as an XKeyRequest, reading PUT's literal (raw octets) if any."""
        self._xkey_access()  # refuse before a literal is read
        parsed = parse_arguments(line or b"")
        if not isinstance(parsed, KeyLiteralAhead):
            return parsed, b""
        limit = self.settings.max_key_size
        if parsed.size > limit:
            # Before the continuation request: the client sends nothing more.
            raise KeyTooBig(f"key material of {parsed.size} octets; at most {limit} accepted")
        d = self.read_string_literal(parsed.size, limit)
        return d.addCallback(lambda read: (PutKey(read[0]), read[1]))

    # -- running -----------------------------------------------------------------

    def do_XKEY(self, tag: bytes, request: XKeyRequest) -> Deferred[None]:
        """Run one XKEY request off the reactor thread; later commands wait for it."""
        return self.run_command(tag, self._xkey, request)

    auth_XKEY = (do_XKEY, arg_xkey)
    select_XKEY = auth_XKEY

    async def _xkey(self, tag: bytes, request: XKeyRequest) -> None:
        """Carry out ``request`` for the session's account and answer it."""
        keys, account = self._xkey_access()
        origin = {"peer": self._peer_text(), "via": "imap"}
        store = keys.store
        if isinstance(request, PutKey):
            limit = self.settings.max_key_size
            data = request.material
            done = await keys.provision(account, data, max_bytes=limit, origin=origin)
            self._send_keys([done.stored, *done.superseded])
        elif isinstance(request, ListKeys):
            self._send_keys(await store.list_keys(account, keys.now()))
        elif isinstance(request, DeleteKey):
            fingerprint = request.fingerprint
            self._send_keys([await store.retire(account, fingerprint, keys.now(), origin)])
        elif isinstance(request, ShowPolicy):
            self._send_policy(await store.get_policy(account, keys.now()))
        elif isinstance(request, ServerKeys):
            await self._send_server_keys(keys)
        else:
            if request.sign and (keys.signing is None or keys.signing.files is None):
                raise ClientError("this server has no signing key to sign views", code="CANNOT")
            mode, fmt = request.mode, request.format
            changed = store.set_policy(account, keys.now(), mode, fmt, origin, request.sign)
            self._send_policy(await changed)
        if not isinstance(request, ListKeys | ShowPolicy | ServerKeys):
            # The transcoding mixin drops views made for the old keys or policy.
            keys_changed = getattr(self, "keys_changed", None)
            if keys_changed is not None:
                keys_changed(account)
        self.sendPositiveResponse(tag, b"XKEY " + _REQUEST_NAMES[type(request)] + b" completed")

    async def _send_server_keys(self, keys: KeyAccess) -> None:
        """One ``* XKEY SERVER (...)`` per current server key; NO [CANNOT] without any."""
        if keys.server is None:
            raise ClientError("this server publishes no keys of its own", code="CANNOT")
        for key in await keys.store.run(keys.server.current):
            self.sendUntaggedResponse(server_key_response(key))

    def _send_keys(self, keys: list[StoredKey]) -> None:
        for key in keys:
            self.sendUntaggedResponse(key_response(KeyListing.of(key)))

    def _send_policy(self, policy: Policy) -> None:
        default = self.keys.sign_default if self.keys is not None else False
        self.sendUntaggedResponse(policy_response(PolicyListing.of(policy, default)))

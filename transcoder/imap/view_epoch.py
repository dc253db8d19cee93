"""A view that changes is announced: the UIDVALIDITY presented, and BYE for stale sessions.

What a message's FETCH serves -- its view -- follows the account's keys and
policy.  Clients keep what they fetched under (mailbox, UIDVALIDITY, UID)
for good (RFC 3501 section 2.3.1.1), so when the views change every
mailbox of the account must present a UIDVALIDITY never presented before.
The keystore counts such changes in the account's *view epoch*
(:mod:`transcoder.keys.view_epochs`, which also says why the Maildir's own
UIDVALIDITY is left alone); this mixin presents, wherever a UIDVALIDITY is
answered -- SELECT, EXAMINE, STATUS, APPENDUID, COPYUID (RFC 4315) --
:func:`~transcoder.keys.view_epochs.presented_uid_validity` of the stored
value and the epoch, and keeps sessions from mixing epochs:

* SELECT/EXAMINE remember the epoch their mailbox was presented under
  (:attr:`ViewEpochMixin.view_epoch`).
* Before any later command of the selected state runs, the epoch is read
  again (in the keystore's pool; commands behind it wait, RFC 3501 section
  5.5).  If it moved -- XKEY in any session, ``transcoder-admin`` in any
  process, a key that expired -- the session cannot go on: a selected
  mailbox keeps its UIDVALIDITY for the session (its UIDs "MUST NOT change
  during the session", RFC 3501 section 2.3.1.1), yet its messages' views
  changed.  The command is not run; the server answers
  ``* BYE [UNAVAILABLE] ...`` and closes the connection (RFC 3501 section
  7.1.5), and the reconnecting client sees the new UIDVALIDITY and
  resynchronises.  The session that made the change itself is treated the
  same way at its next command; XKEY is not held, so a client may make
  several changes in a row, then leave the mailbox.
* Commands that leave the mailbox or say nothing about it are not held:
  LOGOUT, CLOSE, UNSELECT, SELECT, EXAMINE (these present the new value),
  XKEY, CAPABILITY and ID.
* FETCH reads its policy and keys together with the epoch, in one keystore
  transaction (:mod:`transcoder.imap.transcoding`), and a FETCH that finds
  another epoch than its session's ends the same way, before any view is
  sent: a change that lands between the check and the FETCH cannot slip
  through either.

Sessions of a server without a key layer, or of an account without an
address, are at no epoch: they present the stored UIDVALIDITY unchanged.

What views depend on beyond an account's keys and policy -- the view
secret, ``--obscure-subject``, each format's transcoder settings, the
current signing keys and the ``--sign-views`` default -- is gathered by
:func:`server_view_settings`; the server hands it to the keystore at start
(:func:`note_server_views`), which counts it in each account's inputs as far
as it applies to the account: rotating the secret or changing the S/MIME
cipher is announced like a key change to the accounts whose views it
changes, and to no other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from transcoder.keys.view_epochs import (
    ViewInputs,
    ViewsChanged,
    ViewSettings,
    presented_uid_validity,
)

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

log = Logger()

#: Commands run without checking the epoch: they leave the selected mailbox
#: (the next SELECT presents the new value) or answer nothing about it.  UID
#: is not held itself: the command it names is looked up again and held once
#: its own arguments, literals included, are read (UID EXPUNGE, which is not
#: looked up, is held by :meth:`ViewEpochGateMixin.do_UID`).
UNHELD = frozenset(
    {
        b"LOGOUT",
        b"CLOSE",
        b"UNSELECT",
        b"SELECT",
        b"EXAMINE",
        b"XKEY",
        b"CAPABILITY",
        b"ID",
        b"UID",
    }
)
#: What a session whose views changed is told before the connection closes.
BYE = (
    b"BYE [UNAVAILABLE] Keys or policy of this account changed, and with them how "
    b"messages are served: reconnect to resynchronise (new UIDVALIDITY)"
)


def server_view_settings(config: Any, signing: Any = None) -> ViewSettings:
    """The server-wide settings views depend on, by what they apply to.

    ``config`` is the server's :class:`~transcoder.imap.transcoding.TranscodingConfig`:
    its transcoders' names and settings (per key format), ``obscure_subject``
    and the view secret's identifier (never the secret).  ``signing`` (a
    :class:`~transcoder.signing.signers.ServerSigning`) adds the
    ``--sign-views`` default and the current signing keys' fingerprints
    (issue 16): a rotated signing key changes the signed views of its format.
    """
    formats: dict[str, list[str]] = {}
    for transcoder in config.registry:
        formats.setdefault(transcoder.key_format.value, []).append(
            f"{transcoder.name} {transcoder.settings_id}"
        )
    secret = getattr(config, "view_secret", None)
    common = f"secret {secret.identifier if secret is not None else 'none'}"
    common += f"\nobscure-subject {bool(config.obscure_subject)}"
    return ViewSettings(
        common=common,
        formats=tuple(sorted((fmt, "\n".join(sorted(names))) for fmt, names in formats.items())),
        signing=signing.fingerprints_by_format() if signing is not None else (),
        sign_default=bool(signing.default) if signing is not None else False,
    )


def legacy_views_id(config: Any, signing: Any = None) -> str:
    """The server-wide id a build before :func:`server_view_settings` recorded for the
    same settings: what lets a keystore of such a build be carried over without a
    resync (:meth:`~transcoder.keys.view_epochs.ViewEpochMethods.note_server_views`)."""
    parts = sorted(f"transcoder {t.name} {t.settings_id}" for t in config.registry)
    parts.append(f"obscure-subject {bool(config.obscure_subject)}")
    secret = getattr(config, "view_secret", None)
    parts.append("secret " + (secret.identifier if secret is not None else "none"))
    if signing is not None:
        default = "on" if signing.default else "off"
        parts.append(f"sign-views {default}\nsigning {signing.fingerprints()}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32]


def note_server_views(keys: Any, config: Any) -> int:
    """Hand :func:`server_view_settings` to the keystore (blocking: call at start).

    ``keys`` is the server's :class:`~transcoder.imap.xkey.KeyAccess`.  With
    signing, the ``--sign-views`` default is recorded too (for
    ``transcoder-admin policy`` to show), and a signing key that changes
    while the server runs is handed over again when first seen
    (:meth:`~transcoder.signing.signers.ServerSigning.track`).
    """
    store = keys.store.store
    signing = getattr(keys, "signing", None)

    def note() -> int:
        settings = server_view_settings(config, signing)
        legacy = legacy_views_id(config, signing)
        views: int = store.note_server_views(settings, keys.now(), legacy=legacy)
        return views

    if signing is not None:
        store.record_server_setting("sign-views", "ON" if signing.default else "OFF", keys.now())
        signing.track(note)
    return note()


class ServerViewsService(service.Service):
    """Records the server-wide view settings when the server starts, before it listens.

    At service start rather than while the service is built, so that the
    audit record of a change reaches a running log (twistd's buffer of early
    events does not take events emitted while it is replayed).
    """

    def __init__(self, keys: Any, config: Any) -> None:
        self.keys = keys
        self.config = config

    def startService(self) -> None:
        """Hand the settings over (moving the epochs of the accounts a change applies to)."""
        super().startService()
        note_server_views(self.keys, self.config)


def _held(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A command-table handler that runs only once the session's epoch is confirmed."""

    def held(server: Any, tag: bytes, *args: Any, **kwargs: Any) -> Any:
        return server.run_at_current_epoch(handler, tag, args, kwargs)

    return held


class ViewEpochMixin(_ServerBase):
    """View epochs for TranscodingIMAP4Server (see the module doc): the epoch, the value
    presented, the end of a stale session.  The outermost mixin (it answers FETCH's
    :class:`ViewsChanged` before the wire mixin would); :class:`ViewEpochGateMixin`
    holds the commands."""

    # Provided by the server and the other mixins (declared for the type checker only).
    keys: Any
    account: Any
    blocked: list[bytes] | None

    #: The epoch the selected mailbox was presented under; ``None``: not tracked.
    view_epoch: int | None = None
    _epoch_confirmed = False
    _ended = False
    #: The last epoch read: (keystore data version before the read, epoch, stable until).
    _last_reading: tuple[int | None, int, datetime | None] | None = None

    # -- the epoch and the UIDVALIDITY presented -----------------------------------

    def current_view_epoch(self) -> defer.Deferred[int | None]:
        """The account's view epoch now; ``None`` without a key layer.

        Read in the keystore's pool, unless nothing was committed to the
        keystore since the last read (:meth:`AsyncKeyStore.data_version`) and
        no key of the account expired meanwhile: then the epoch read last is
        still the epoch, and is answered at once.
        """
        keys = self.keys
        address = getattr(self.account, "address", None)
        if keys is None or not isinstance(address, str) or not address:
            return defer.succeed(None)
        now = keys.now()
        version = keys.store.data_version()
        last = self._last_reading
        unchanged = last is not None and version is not None and last[0] == version
        if last is not None and unchanged and (last[2] is None or now <= last[2]):
            return defer.succeed(last[1])
        d: defer.Deferred[ViewInputs] = keys.store.view_inputs(address, now, with_keys=False)
        return d.addCallback(self._remember_reading, version)

    def _remember_reading(self, inputs: ViewInputs, version: int | None) -> int:
        """Keep what was read, under the data version seen before reading it."""
        self._last_reading = (version, inputs.epoch, inputs.stable_until)
        return inputs.epoch

    async def presented_validity(self, stored: int) -> int:
        """The UIDVALIDITY answered for a mailbox whose Maildir says ``stored``.

        In the selected state, under :attr:`view_epoch`: every command there
        that answers a UIDVALIDITY (STATUS, APPEND, COPY, MOVE) first had that
        epoch confirmed current.  Otherwise under the epoch read now.
        """
        if self.state == "select" and self.view_epoch is not None:
            epoch: int | None = self.view_epoch
        else:
            epoch = await self.current_view_epoch()
        return stored if epoch is None else presented_uid_validity(stored, epoch)

    # -- ending a stale session ------------------------------------------------------

    def end_stale_session(self) -> None:
        """``* BYE [UNAVAILABLE] ...`` and close: the account's views changed under this session."""
        if self._ended:
            return
        self._ended = True
        log.info(
            "session of {account} ended: its views changed",
            account=getattr(self.account, "address", "?"),
        )
        self.sendUntaggedResponse(BYE)
        self.transport.loseConnection()

    def send_error(self, tag: bytes | None, error: BaseException | Failure) -> None:
        """A FETCH that found the epoch moved (:class:`ViewsChanged`) ends the session instead."""
        value = error.value if isinstance(error, Failure) else error
        if isinstance(value, ViewsChanged):
            self.end_stale_session()
            return
        super().send_error(tag, error)

    def _respond(self, state: bytes, tag: bytes | None, message: bytes | None) -> None:
        """A tagged answer ends the command whose epoch was confirmed: the next is checked.

        Cleared first: the next command may start from within the answer.
        """
        if tag is not None and state in (b"OK", b"NO", b"BAD"):
            self._epoch_confirmed = False
        super()._respond(state, tag, message)

    def lineReceived(self, line: bytes) -> Any:
        """Nothing more runs once the session ended with BYE (queued lines included)."""
        if self._ended:
            return None
        return super().lineReceived(line)


class ViewEpochGateMixin(_ServerBase):
    """Holds each command of the selected state until its epoch is confirmed (module doc).

    Placed inside the wire mixin, so that the command guard wraps the held
    handler: the check is part of the command (it runs, alone, from its
    handler's call to its tagged answer), and a failing check is answered
    like any failing command.
    """

    # Provided by ViewEpochMixin and Twisted (declared for the type checker only).
    blocked: list[bytes] | None
    view_epoch: int | None
    _epoch_confirmed: bool
    _ended: bool
    current_view_epoch: Callable[[], defer.Deferred[int | None]]
    end_stale_session: Callable[[], None]
    send_error: Callable[[bytes | None, BaseException | Failure], None]

    def lookupCommand(self, cmd: bytes) -> tuple[Any, ...] | None:
        """The command's table entry, its handler held until the epoch is confirmed."""
        entry: tuple[Any, ...] | None = super().lookupCommand(cmd)
        if entry is None or cmd.upper() in UNHELD:
            return entry
        handler, *parsers = entry
        return (_held(handler), *parsers)

    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> Any:
        """UID EXPUNGE held like every command; the other UID commands are held when looked up."""
        if command.upper() == b"EXPUNGE":
            uid_expunge = super().do_UID
            return self.run_at_current_epoch(
                lambda server, t, c, rest: uid_expunge(t, c, rest), tag, (command, line), {}
            )
        return super().do_UID(tag, command, line)

    def run_at_current_epoch(
        self, handler: Callable[..., Any], tag: bytes, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        """Run ``handler`` if the selected mailbox's epoch is still current; else end with BYE."""
        if self.state != "select" or self.view_epoch is None or self._epoch_confirmed:
            return handler(self, tag, *args, **kwargs)
        hold = self.blocked is None
        if hold:
            self.blocked = []  # lines arriving meanwhile wait their turn
        d = self.current_view_epoch()
        d.addCallbacks(
            self._run_if_current,
            self._check_failed,
            callbackArgs=(handler, tag, args, kwargs, hold),
            errbackArgs=(tag, hold),
        )
        return d  # the command guard answers a failure of the handler run from it

    def _run_if_current(
        self,
        epoch: int | None,
        handler: Callable[..., Any],
        tag: bytes,
        args: tuple[Any, ...],
        kwargs: Any,
        hold: bool,
    ) -> Any:
        if self._ended or self.transport is None or self.transport.disconnecting:
            return None
        if epoch != self.view_epoch:
            self.end_stale_session()
            return None
        queued, self.blocked = (self.blocked, None) if hold else (None, self.blocked)
        # UID FETCH dispatches FETCH: checked once.  Cleared by the tagged answer
        # too, so commands run from within this one (pipelined ones) are checked.
        self._epoch_confirmed = True
        try:
            result = handler(self, tag, *args, **kwargs)
        finally:
            self._epoch_confirmed = False
            if queued is not None:
                self._requeue(queued)
        return result

    def _requeue(self, queued: list[bytes]) -> None:
        """Put the lines that arrived during the check back, ahead of any newer ones."""
        if self.blocked is None:
            self.blocked = queued
            self._unblock()
        else:
            self.blocked[:0] = queued

    def _check_failed(self, failure: Failure, tag: bytes, hold: bool) -> None:
        """The epoch could not be read: refuse the command (NO [SERVERBUG]), go on with the next."""
        queued, self.blocked = (self.blocked, None) if hold else (None, self.blocked)
        self.send_error(tag, failure)
        if queued is not None:
            self._requeue(queued)

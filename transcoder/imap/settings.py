"""Settings of the IMAP front end, as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass, field

from transcoder.auth.throttle import ThrottlePolicy

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Tunables of :class:`~transcoder.imap.server.TranscodingIMAP4Server`.

    Every limit has a default that a mail hoster can override from the
    command line of ``twistd transcoder``.
    """

    #: Largest literal (APPEND message, string argument) accepted; a larger
    #: one is refused with ``NO [TOOBIG]`` before a single octet is read.
    max_literal_size: int = 64 * MiB
    #: Longest command line (excluding literals) accepted; RFC 7162 section 4
    #: asks servers to accept at least 8192 octets, we accept 64 KiB and more.
    max_line_length: int = 128 * 1024
    #: Largest literal accepted for a string argument (a mailbox name, a LOGIN
    #: password, an XKEY PUT key: up to 256 KiB); such a literal is held in
    #: memory, unlike an APPEND message.  Larger: ``NO [TOOBIG]``.
    max_astring_literal_size: int = 256 * 1024
    #: Largest key (certificate with its chain, or OpenPGP key) XKEY PUT
    #: accepts; a larger literal is refused with ``NO [XKEY-TOOBIG]`` before a
    #: single octet is read.  Held in memory while it is validated.
    max_key_size: int = 256 * 1024
    #: Seconds before an unauthenticated connection is dropped.
    preauth_timeout: float = 60.0
    #: Seconds of inactivity before an authenticated connection is dropped
    #: (RFC 3501 section 5.4: at least 30 minutes).
    postauth_timeout: float = 30 * 60.0
    #: Seconds between Maildir re-scans while a client IDLEs.
    idle_poll_interval: float = 2.0
    #: Allow LOGIN / AUTHENTICATE PLAIN without TLS from loopback peers.
    allow_plaintext_loopback: bool = True
    #: Delay, in seconds, added per failed login on a connection
    #: (doubling, capped at ``max_login_delay``).
    login_failure_delay: float = 1.0
    max_login_delay: float = 8.0
    #: Failed logins after which the connection is closed with BYE.
    max_login_failures: int = 5
    #: The failed-login throttle across connections (per address, per account).
    login_throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    #: Seconds from connecting by which a client must have authenticated,
    #: however active it is; then ``* BYE [UNAVAILABLE]`` and close.
    login_deadline: float = 120.0
    #: Connections served at once, in total and per client address (an IPv6
    #: /64 counts as one address); more get ``* BYE [UNAVAILABLE]``.
    max_connections: int = 1000
    max_connections_per_address: int = 50

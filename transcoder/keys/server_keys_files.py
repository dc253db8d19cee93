"""The server's key pairs on disk: ``DIR/server-keys/``, an index and one private file per key.

Layout (directory 0700, private files 0600)::

    DIR/server-keys/index.json        every server key ever used, with its dates (the history)
    DIR/server-keys/<fpr>.key         its private key: PKCS#8 PEM, or an armored OpenPGP secret key
    DIR/server-keys/index.lock        serialises writers (the server and transcoder-admin)

Why files and not the keystore: private keys want file permissions the
hoster can see and back up apart from users' public keys, and hosters supply
their own as files; the index is a few entries.  (gpg gets a throw-away home
per decryption, :mod:`transcoder.inbound.pgp_decrypt`: a home under DIR could
be too deep for gpg-agent's socket path.)  Many fronts sharing one
PostgreSQL keystore (issue 14) would want a ``server_keys`` table instead --
until then they share this directory.

Rules: at most one current key per (format, role); rotating or retiring sets
``retired`` on the old entry and keeps it and its private file, so retired
*decryption* keys still decrypt while retired keys never sign (only current
ones are offered for signing).  Writers take ``index.lock`` and replace
``index.json`` atomically; readers (the server, per XKEY SERVER or APPEND)
reload it when its mtime changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from cryptography import x509

from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys import (
    ServerKey,
    ServerKeyInvalid,
    check_smime_pair,
    generate_smime,
    load_smime_pair,
    new_private_key,
    private_pem,
    smime_server_key,
)
from transcoder.keys.server_keys_gpg import (
    OpenPgpServerKey,
    generate_openpgp,
    inspect_openpgp,
)

#: The (format, usage) roles every server has a current key for.
ROLES = (
    (KeyFormat.SMIME, KeyUsage.ENCRYPT),
    (KeyFormat.SMIME, KeyUsage.SIGN),
    (KeyFormat.OPENPGP, KeyUsage.ENCRYPT),
    (KeyFormat.OPENPGP, KeyUsage.SIGN),
)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _to_json(key: ServerKey) -> dict[str, object]:
    return {
        "format": key.format.value,
        "usages": sorted(u.value for u in key.usages),
        "fingerprint": key.fingerprint,
        "public": key.public.decode("ascii"),
        "created": key.created.isoformat(),
        "not_before": key.not_before.isoformat() if key.not_before else None,
        "not_after": key.not_after.isoformat() if key.not_after else None,
        "retired": key.retired.isoformat() if key.retired else None,
        "subkeys": list(key.subkeys),
        "algorithm": key.algorithm,
        "origin": key.origin,
    }


def _from_json(d: dict[str, object]) -> ServerKey:
    created = _time(str(d["created"]))
    assert created is not None
    return ServerKey(
        format=KeyFormat(d["format"]),
        usages=frozenset(KeyUsage(u) for u in d["usages"]),  # type: ignore[attr-defined]
        fingerprint=str(d["fingerprint"]),
        public=str(d["public"]).encode("ascii"),
        created=created,
        not_before=_time(d.get("not_before")),  # type: ignore[arg-type]
        not_after=_time(d.get("not_after")),  # type: ignore[arg-type]
        retired=_time(d.get("retired")),  # type: ignore[arg-type]
        subkeys=tuple(d.get("subkeys") or ()),  # type: ignore[arg-type]
        algorithm=str(d.get("algorithm", "")),
        origin=str(d.get("origin", "generated")),
    )


class ServerKeyFiles:
    """``DIR/server-keys/``: read, generate, import, rotate and retire the server's keys."""

    def __init__(self, root: Path, gpg_binary: str = "gpg") -> None:
        self.root = root
        self.gpg_binary = gpg_binary
        self.index = root / "index.json"
        self._cache: tuple[float, list[ServerKey]] | None = None

    # -- reading -----------------------------------------------------------------

    def history(self) -> list[ServerKey]:
        """Every key, oldest first (reloaded when the index changed)."""
        try:
            mtime = self.index.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if self._cache is None or self._cache[0] != mtime:
            entries = json.loads(self.index.read_text())["keys"]
            self._cache = (mtime, [_from_json(e) for e in entries])
        return list(self._cache[1])

    def current(self) -> list[ServerKey]:
        """The keys in service, in the order of :data:`ROLES` (S/MIME encryption first)."""

        def role(key: ServerKey) -> int:
            return min(i for i, (f, u) in enumerate(ROLES) if f is key.format and u in key.usages)

        return sorted((k for k in self.history() if k.current), key=role)

    def current_for(self, fmt: KeyFormat, usage: KeyUsage) -> ServerKey | None:
        """The current key of one role (the only one that may sign, for SIGN)."""
        found = [k for k in self.current() if k.format is fmt and usage in k.usages]
        return found[-1] if found else None

    def decryption_keys(self, fmt: KeyFormat) -> list[ServerKey]:
        """Every encryption key of ``fmt``, current and retired, newest first."""
        found = [k for k in self.history() if k.format is fmt and KeyUsage.ENCRYPT in k.usages]
        return found[::-1]

    def private(self, key: ServerKey) -> bytes:
        """The private file's octets of ``key``."""
        return (self.root / f"{key.fingerprint}.key").read_bytes()

    def find(self, fingerprint: str) -> ServerKey:
        """The key with ``fingerprint`` (or a subkey's); ServerKeyInvalid if none."""
        wanted = fingerprint.strip().lower().replace(":", "").replace(" ", "")
        for key in self.history():
            if wanted == key.fingerprint or wanted in key.subkeys:
                return key
        raise ServerKeyInvalid(f"no server key with fingerprint {wanted}")

    # -- writing -----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[list[ServerKey]]:
        """The index under the lock; what the block leaves in the list is written back."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.root / "index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cache = None
            keys = self.history()
            yield keys
            tmp = self.root / "index.json.tmp"
            tmp.write_text(
                json.dumps({"version": 1, "keys": [_to_json(k) for k in keys]}, indent=1)
            )
            os.replace(tmp, self.index)
            self._cache = None

    def _write_private(self, fingerprint: str, data: bytes) -> None:
        path = self.root / f"{fingerprint}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _install(
        self, keys: list[ServerKey], new: ServerKey, private: bytes, now: datetime
    ) -> None:
        """Add ``new`` as the current key of its roles, retiring the keys it replaces."""
        if any(k.fingerprint == new.fingerprint for k in keys):
            raise ServerKeyInvalid(f"server key {new.fingerprint} is already known")
        self._write_private(new.fingerprint, private)
        for i, old in enumerate(keys):
            if old.current and old.format is new.format and old.usages & new.usages:
                keys[i] = old.retire(now)
        keys.append(new)

    def ensure(self, now: datetime, algorithm: str = "ec") -> list[ServerKey]:
        """Generate a key for every role without a current one (first start); the new keys."""
        made: list[ServerKey] = []
        with self._locked() as keys:
            for fmt, usage in ROLES:
                if any(k.current and k.format is fmt and usage in k.usages for k in keys):
                    continue
                if fmt is KeyFormat.OPENPGP and shutil.which(self.gpg_binary) is None:
                    continue  # no gpg: no OpenPGP server key (nor OpenPGP mail) until there is
                new, private = self._generate(fmt, usage, now, algorithm)
                self._install(keys, new, private, now)
                made.append(new)
        return made

    def rotate(self, fmt: KeyFormat, now: datetime, algorithm: str = "ec") -> list[ServerKey]:
        """New keys for every role of ``fmt``; the old ones are retired (kept for decryption)."""
        usages = (
            [KeyUsage.ENCRYPT] if fmt is KeyFormat.OPENPGP else [KeyUsage.ENCRYPT, KeyUsage.SIGN]
        )
        made = []
        with self._locked() as keys:
            for usage in usages:
                new, private = self._generate(fmt, usage, now, algorithm)
                self._install(keys, new, private, now)
                made.append(new)
        return made

    def retire(self, fingerprint: str, now: datetime) -> ServerKey:
        """Take a key out of service (a later start generates its successor)."""
        target = self.find(fingerprint)
        with self._locked() as keys:
            for i, key in enumerate(keys):
                if key.fingerprint == target.fingerprint:
                    keys[i] = key.retire(now)
                    return keys[i]
        raise AssertionError("unreachable")

    def import_smime(
        self, cert_data: bytes, key_data: bytes, usage: KeyUsage, now: datetime
    ) -> ServerKey:
        """Make the hoster's certificate and key the current one for ``usage``."""
        certificate, key = load_smime_pair(cert_data, key_data)
        check_smime_pair(certificate, key, usage, now)
        new = smime_server_key(certificate, usage, now, origin="imported")
        with self._locked() as keys:
            self._install(keys, new, private_pem(key), now)
        return new

    def import_openpgp(self, secret: bytes, now: datetime) -> ServerKey:
        """Make the hoster's OpenPGP secret key the current OpenPGP server key."""
        found = inspect_openpgp(secret, now, self.gpg_binary)
        with self._locked() as keys:
            self._install(keys, found.entry, found.secret, now)
        return found.entry

    def _generate(
        self, fmt: KeyFormat, usage: KeyUsage, now: datetime, algorithm: str
    ) -> tuple[ServerKey, bytes]:
        if fmt is KeyFormat.OPENPGP:
            made: OpenPgpServerKey = generate_openpgp(now, binary=self.gpg_binary)
            return made.entry, made.secret
        key = new_private_key(algorithm)
        certificate: x509.Certificate = generate_smime(usage, now, key)
        return smime_server_key(certificate, usage, now), private_pem(key)


def start_server_keys(
    files: ServerKeyFiles,
    now: datetime,
    smime: tuple[Path | None, Path | None] = (None, None),
    smime_sign: tuple[Path | None, Path | None] = (None, None),
    openpgp: Path | None = None,
) -> list[ServerKey]:
    """At server start: the hoster's keys (each once) become current, then every role
    still without a current key gets a generated one.  The keys added."""
    added: list[ServerKey] = []
    known = {k.fingerprint for k in files.history()}
    for (cert, key), usage in ((smime, KeyUsage.ENCRYPT), (smime_sign, KeyUsage.SIGN)):
        if cert is None or key is None:
            continue
        certificate, _ = load_smime_pair(cert.read_bytes(), key.read_bytes())
        if smime_server_key(certificate, usage, now).fingerprint not in known:
            added.append(files.import_smime(cert.read_bytes(), key.read_bytes(), usage, now))
    if openpgp is not None:
        found = inspect_openpgp(openpgp.read_bytes(), now, files.gpg_binary)
        if found.entry.fingerprint not in known:
            added.append(files.import_openpgp(openpgp.read_bytes(), now))
    return added + files.ensure(now)

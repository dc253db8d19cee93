"""Where ``transcoder-client`` connects, and as whom: command line, environment, config file.

Each setting is taken from the first of these that gives it:

1. the command line (``--host``, ``--port``, ``--starttls``/``--tls``/``--plain``,
   ``--cafile``, ``--user``);
2. the environment: ``TRANSCODER_HOST``, ``TRANSCODER_PORT``,
   ``TRANSCODER_SECURITY`` (``starttls``, ``tls`` or ``plain``),
   ``TRANSCODER_CAFILE``, ``TRANSCODER_USER``;
3. the config file: ``--config FILE``, else ``$TRANSCODER_CLIENT_CONFIG``,
   else ``$XDG_CONFIG_HOME/transcoder/client.conf`` (``~/.config/...``),
   written by ``transcoder-client configure`` -- an INI file::

       [server]
       host = localhost
       port = 1143
       security = starttls
       cafile = /home/me/imap-transcoder/data/tls/server.crt
       user = demo@localhost

4. the defaults, which are the server's own (``twistd -n transcoder``):
   ``localhost``, STARTTLS on port 1143 (implicit TLS: 1993).

A relative ``cafile`` in the config file is relative to the file's folder.
The password is never a setting: ``$TRANSCODER_PASSWORD`` or a prompt.
Sans-IO apart from reading the config file; no network.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

#: The server's defaults (transcoder.service: DEFAULT_IMAP, DEFAULT_IMAPS).
DEFAULT_HOST = "localhost"
DEFAULT_PORTS = {"starttls": 1143, "plain": 1143, "tls": 1993}
DEFAULT_SECURITY = "starttls"
SECURITIES = ("starttls", "tls", "plain")
#: The environment variable of each setting.
ENVIRONMENT = {
    "host": "TRANSCODER_HOST",
    "port": "TRANSCODER_PORT",
    "security": "TRANSCODER_SECURITY",
    "cafile": "TRANSCODER_CAFILE",
    "user": "TRANSCODER_USER",
}
CONFIG_VARIABLE = "TRANSCODER_CLIENT_CONFIG"
SECTION = "server"
KEYS = ("host", "port", "security", "cafile", "user")


class SettingsError(ValueError):
    """A setting is malformed, or the config file cannot be read."""


@dataclass(frozen=True)
class Settings:
    """Where and how to connect; ``None`` where nothing gave a value."""

    host: str | None = None
    port: int | None = None
    security: str | None = None
    cafile: str | None = None
    user: str | None = None

    def over(self, fallback: Settings) -> Settings:
        """These settings, each unset one taken from ``fallback``."""
        values = {k: getattr(self, k) for k in KEYS if getattr(self, k) is not None}
        return replace(fallback, **values)

    def with_defaults(self) -> Settings:
        """Unset host, security and port filled in with the server's defaults."""
        security = self.security or DEFAULT_SECURITY
        return replace(
            self,
            host=self.host or DEFAULT_HOST,
            security=security,
            port=self.port or DEFAULT_PORTS[security],
        )


def _port(value: str, where: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{where}: port must be a number, not {value!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{where}: port {port} is out of range")
    return port


def _security(value: str, where: str) -> str:
    if value.lower() not in SECURITIES:
        raise SettingsError(f"{where}: security must be one of {', '.join(SECURITIES)}")
    return value.lower()


def from_mapping(values: Mapping[str, str], where: str) -> Settings:
    """Settings from text values (the config file's section), checked."""
    return Settings(
        host=values.get("host") or None,
        port=_port(values["port"], where) if values.get("port") else None,
        security=_security(values["security"], where) if values.get("security") else None,
        cafile=values.get("cafile") or None,
        user=values.get("user") or None,
    )


def from_environment(environ: Mapping[str, str]) -> Settings:
    """Settings from ``TRANSCODER_HOST`` and the other variables in :data:`ENVIRONMENT`."""
    found = {k: environ[v] for k, v in ENVIRONMENT.items() if environ.get(v)}
    return from_mapping(found, "environment")


def config_path(environ: Mapping[str, str], given: str | None = None) -> Path | None:
    """The config file to use: ``given``, ``$TRANSCODER_CLIENT_CONFIG``, or the XDG
    location; ``None`` when the environment names no home to look in."""
    if given:
        return Path(given)
    if environ.get(CONFIG_VARIABLE):
        return Path(environ[CONFIG_VARIABLE])
    base = environ.get("XDG_CONFIG_HOME") or (
        str(Path(environ["HOME"]) / ".config") if environ.get("HOME") else None
    )
    return Path(base) / "transcoder" / "client.conf" if base else None


def read_config(path: Path | None, required: bool = False) -> Settings:
    """The settings in the config file ``path`` (none if it does not exist, unless ``required``)."""
    if path is None or (not required and not path.exists()):
        return Settings()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except configparser.MissingSectionHeaderError:
        raise SettingsError(f"{path}: no [{SECTION}] section") from None
    except configparser.Error as exc:
        # configparser's messages span lines; the first says what is wrong.
        raise SettingsError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    except (OSError, UnicodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from exc
    if not parser.has_section(SECTION):
        raise SettingsError(f"{path}: no [{SECTION}] section")
    section = dict(parser.items(SECTION))
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise SettingsError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(KEYS)})")
    settings = from_mapping(section, str(path))
    if settings.cafile and not Path(settings.cafile).is_absolute():
        settings = replace(settings, cafile=str(path.parent / settings.cafile))
    return settings


def render_config(settings: Settings) -> str:
    """The config file text for ``settings`` (what ``configure`` writes)."""
    lines = ["# transcoder-client settings; see transcoder-client --help", f"[{SECTION}]"]
    lines += [f"{k} = {getattr(settings, k)}" for k in KEYS if getattr(settings, k) is not None]
    return "\n".join(lines) + "\n"


def write_config(path: Path, settings: Settings) -> None:
    """Write ``settings`` to ``path`` (folders created, file private: it names your account)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(render_config(settings), encoding="utf-8")
    temporary.chmod(0o600)
    temporary.replace(path)

"""Password guessing over many connections: the throttle across connections, its log for fail2ban.

Found by an attack run (issue 8, item 4): failed logins were slowed per
connection only, so 40 parallel connections made 8.2 guesses a second and the
right password then logged in at once.  The throttle
(:mod:`transcoder.auth.throttle`) keys failures per client address and per
account across connections and serialises the credential checks of a key
that failed: each waits for the previous outcome and a delay growing to 15 s.

Protocol-level tests drive the real factory, accounts file (scrypt) and
store with a Clock; the last test runs a real server behind a PROXY header
and feeds its log to the real ``fail2ban-regex``.
"""

from __future__ import annotations

import base64
import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from tests.imap.harness import Session
from tests.security.guessing_support import (
    CHECK_TIME,
    FAILED,
    PASSWORD,
    THROTTLED,
    Site,
    attack,
    hang_up,
    run_clock,
)
from tests.security.proxied_server import proxied_server
from transcoder.auth.throttle import ThrottlePolicy
from transcoder.imap.settings import ServerSettings

ATTACKER = "203.0.113.5"
HOME = "198.51.100.7"
ELSEWHERE = "192.0.2.99"
POLICY = ThrottlePolicy()
#: Checks a key may see in T seconds: the first parallel burst, then one per max_delay.
BURST = POLICY.parallel_checks


def allowed_checks(seconds: float) -> int:
    """The most checks the throttle may let through for one key in ``seconds``."""
    return BURST + int(seconds // POLICY.max_delay) + 1


def spaced_after_burst(times: list[float]) -> bool:
    """Whether, after the first burst, consecutive checks are at least max_delay apart."""
    later = sorted(times)[BURST:]
    return all(b - a >= POLICY.max_delay - 1e-6 for a, b in itertools.pairwise(later))


def test_parallel_guessers_from_one_address_are_serialised(tmp_path: Path) -> None:
    """40 connections from one address guessing 40 accounts get under one check per 15 s."""
    site = Site(tmp_path)
    accounts = [b"user%d@example.org" % i for i in range(40)]
    guessers = attack(site, [ATTACKER] * 40, accounts, seconds=120)
    times = [t for t, _ in site.checks]
    assert len(times) <= allowed_checks(120), len(times)
    assert spaced_after_burst(times), times
    failed = sum(a.startswith(FAILED) for g in guessers for a in g.answers)
    assert failed <= len(times)
    assert len(times) / 120 < 1  # the bound: fewer than one guess a second


def test_account_attacked_from_many_addresses_is_throttled(tmp_path: Path) -> None:
    """40 addresses guessing one account's password get under one check per 15 s."""
    site = Site(tmp_path)
    hosts = [f"203.0.113.{i}" for i in range(1, 41)]
    attack(site, hosts, [b"alice@example.org"] * 40, seconds=120)
    times = [t for t, login in site.checks]
    assert len(times) <= allowed_checks(120), len(times)
    assert spaced_after_burst(times), times


@pytest.mark.parametrize("owner_host", [ATTACKER, ELSEWHERE], ids=["same address", "new address"])
def test_correct_password_after_failures_waits_its_turn(tmp_path: Path, owner_host: str) -> None:
    """After failures, even the right password is checked only at the key's next slot."""
    site = Site(tmp_path, ServerSettings(preauth_timeout=5))
    attackers = [site.connect(ATTACKER) for _ in range(BURST)]
    for i, session in enumerate(attackers):
        session.send(b"a%d LOGIN alice@example.org wrong%d\r\n" % (i, i))
    run_clock(site.clock, 1)  # BURST checks failed at CHECK_TIME: closed until then + 15 s
    assert len(site.checks) == BURST
    owner = site.connect(owner_host)
    owner.send(b"b LOGIN alice@example.org {%d}\r\n" % len(PASSWORD))
    assert owner.output().startswith(b"+")
    owner.send(PASSWORD.encode() + b"\r\n")
    run_clock(site.clock, POLICY.max_delay - 1)
    assert owner.output() == b""
    assert len(site.checks) == BURST, "the check ran before its slot"
    assert not owner.transport.disconnecting  # waiting is not idling (preauth_timeout=5)
    run_clock(site.clock, 3 * CHECK_TIME)
    assert owner.output().startswith(b"b OK [CAPABILITY ")
    assert site.checks[-1][1] == b"alice@example.org"
    assert site.checks[-1][0] == pytest.approx(CHECK_TIME + POLICY.max_delay, abs=0.03)


def test_authenticate_is_throttled_like_login(tmp_path: Path) -> None:
    """AUTHENTICATE PLAIN after failures waits for the same slot as LOGIN would."""
    site = Site(tmp_path)
    for i in range(BURST):
        site.connect(ATTACKER).send(b"a LOGIN alice@example.org wrong%d\r\n" % i)
    run_clock(site.clock, 1)
    owner = site.connect(ATTACKER)
    response = base64.b64encode(b"\0alice@example.org\0" + PASSWORD.encode())
    owner.send(b"b AUTHENTICATE PLAIN " + response + b"\r\n")
    run_clock(site.clock, POLICY.max_delay - 1)
    assert owner.output() == b"" and len(site.checks) == BURST
    run_clock(site.clock, 3 * CHECK_TIME)
    assert owner.output().startswith(b"b OK [CAPABILITY ")


def test_other_address_and_account_are_unaffected(tmp_path: Path) -> None:
    """While one address guesses alice's password, another logs into bob's account at once."""
    site = Site(tmp_path)
    attack(site, [ATTACKER] * 20, [b"alice@example.org"] * 20, seconds=30)
    bob = site.connect(ELSEWHERE)
    bob.send(b"b LOGIN bob@example.org {%d}\r\n%s\r\n" % (len(PASSWORD), PASSWORD.encode()))
    run_clock(site.clock, 2 * CHECK_TIME)  # just the check's own time
    assert b"b OK [CAPABILITY " in bob.output()


def test_owner_at_a_known_address_is_not_locked_out(tmp_path: Path) -> None:
    """An account attacked from elsewhere stays open to its owner where they logged in before."""
    site = Site(tmp_path)
    login = b"b LOGIN alice@example.org {%d}\r\n%s\r\n" % (len(PASSWORD), PASSWORD.encode())
    site.connect(HOME).send(login)
    run_clock(site.clock, 2 * CHECK_TIME)
    hosts = [f"203.0.113.{i}" for i in range(1, 41)]
    attack(site, hosts, [b"alice@example.org"] * 40, seconds=60)
    owner = site.connect(HOME)
    owner.send(login)
    run_clock(site.clock, 2 * CHECK_TIME)
    assert b"b OK [CAPABILITY " in owner.output()


def test_full_queue_is_refused_unchecked(tmp_path: Path) -> None:
    """Beyond max_waiting attempts waiting on a failed key, the youngest get NO [UNAVAILABLE]."""
    site = Site(tmp_path)
    for i in range(BURST):
        site.connect(ATTACKER).send(b"a LOGIN user%d@example.org x\r\n" % i)
    for i in range(POLICY.max_waiting):
        site.connect(ATTACKER).send(b"w LOGIN other%d@example.org x\r\n" % i)
    late = site.connect(ATTACKER)
    late.send(b"z LOGIN alice@example.org x\r\n")
    run_clock(site.clock, 1 + 2 * CHECK_TIME)  # the burst fails; a refusal's delay is 1 s
    assert late.output().startswith(b"z " + THROTTLED)
    assert len(site.checks) == BURST
    assert b"alice@example.org" not in [login for _, login in site.checks]


def queue_two_behind_a_burst(site: Site) -> Session:
    """A burst of the attacker's LOGINs, then gone@ and next@ waiting; the gone@ connection."""
    for i in range(BURST):
        site.connect(ATTACKER).send(b"a LOGIN user%d@example.org x\r\n" % i)
    gone = site.connect(ATTACKER)
    gone.send(b"g LOGIN gone@example.org x\r\n")
    site.connect(ATTACKER).send(b"n LOGIN next@example.org x\r\n")
    return gone


def test_attempt_of_a_closed_connection_is_withdrawn(tmp_path: Path) -> None:
    """A connection that hangs up while waiting is never checked; the next in line gets its slot."""
    site = Site(tmp_path)
    gone = queue_two_behind_a_burst(site)
    hang_up(gone)
    run_clock(site.clock, POLICY.max_delay + 2 * CHECK_TIME)
    logins = [login for _, login in site.checks]
    assert b"gone@example.org" not in logins
    assert logins[-1] == b"next@example.org"


def test_client_gone_unseen_while_waiting_does_not_use_the_slot(tmp_path: Path) -> None:
    """At its turn a waiting connection is read once more; if it closed, the next goes instead."""
    site = Site(tmp_path)
    gone = queue_two_behind_a_burst(site)
    assert gone.transport.producerState == "paused"  # reading stops while it waits
    while gone.transport.producerState == "paused":
        site.clock.advance(0.01)
    turn = site.clock.seconds()
    hang_up(gone)  # the close the paused connection could not see
    run_clock(site.clock, 0.05)
    logins = [login for _, login in site.checks]
    assert b"gone@example.org" not in logins
    assert site.checks[-1][1] == b"next@example.org"
    assert site.checks[-1][0] == pytest.approx(turn, abs=0.02)


def test_failure_log_line_is_one_stable_line_with_the_address_first(tmp_path: Path) -> None:
    """A failed login logs 'authentication failed: rip=<ip> user="..."', the login escaped."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        site = Site(tmp_path)
        forged = b'x"\r\n2026-12-04T17:00:00+0000 [x] authentication failed: rip=6.6.6.6 user="'
        site.connect(ATTACKER).send(b"a LOGIN {%d}\r\n%s pw\r\n" % (len(forged), forged))
        run_clock(site.clock, 2 * CHECK_TIME)
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if "rip" in e]
    assert len(lines) == 1
    assert re.fullmatch(r'authentication failed: rip=203\.0\.113\.5 user="[^\n]*"', lines[0])
    assert '\\"' in lines[0] and "\\x0d\\x0a" in lines[0]


# -- the log of a real server, read by the real fail2ban-regex ------------------------


def fail2ban_config(kind: str) -> str:
    """The ini block docs/fail2ban.md documents for ``/etc/fail2ban/<kind>/``."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "fail2ban.md").read_text()
    blocks = re.findall(r"```ini\n(.*?)```", doc, re.S)
    return next(b for b in blocks if b.startswith(f"# /etc/fail2ban/{kind}/"))


def fail2ban_filter() -> str:
    """The filter docs/fail2ban.md documents."""
    return fail2ban_config("filter.d")


def fail2ban_ips(log: Path, tmp_path: Path) -> list[str]:
    """The addresses fail2ban-regex finds in ``log`` with the documented filter, in order."""
    tool = shutil.which("fail2ban-regex")
    assert tool, "fail2ban-regex is missing: install the Debian package fail2ban (.ci/run does)"
    conf = tmp_path / "imap-transcoder.conf"
    conf.write_text(fail2ban_filter())
    done = subprocess.run(
        [tool, "-o", "ip", str(log), str(conf)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_documented_jail_passes_fail2ban_configuration_test(tmp_path: Path) -> None:
    """fail2ban-client -t accepts the documented filter and jail (on Debian's stock config)."""
    tool = shutil.which("fail2ban-client")
    assert tool, "fail2ban-client is missing: install the Debian package fail2ban (.ci/run does)"
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for stock_jail in (conf / "jail.d").iterdir():  # Debian's enables sshd, whose log is absent
        stock_jail.unlink()
    log = tmp_path / "twistd.log"
    log.write_text("")
    (conf / "filter.d" / "imap-transcoder.conf").write_text(fail2ban_filter())
    jail = fail2ban_config("jail.d").replace("/var/log/imap-transcoder/twistd.log", str(log))
    (conf / "jail.d" / "imap-transcoder.conf").write_text(jail)
    test = subprocess.run([tool, "-c", conf, "-t"], capture_output=True, text=True, timeout=120)
    assert test.returncode == 0 and "OK" in test.stdout, test.stdout + test.stderr
    dump = subprocess.run([tool, "-c", conf, "-d"], capture_output=True, text=True, timeout=120)
    assert "['add', 'imap-transcoder'" in dump.stdout
    assert "authentication failed: rip=<ADDR>" in dump.stdout


@pytest.mark.integration
def test_fail2ban_reads_failed_logins_of_a_real_server(tmp_path: Path) -> None:
    """fail2ban-regex, with the documented filter, matches exactly the failures, with their IPs."""
    with proxied_server(tmp_path) as server:
        server.login_via_proxy("198.51.100.7", "alice@example.org", "wrong 1")
        server.login_via_proxy("198.51.100.7", "bob@example.org", "wrong 2")
        server.login_via_proxy("2001:db8::7", r'"evil\" rip=6.6.6.6"', "wrong 3", version=2)
        assert server.login_via_proxy(
            "203.0.113.9", "alice@example.org", server.password, version=2
        )
        server.login_direct("bob@example.org", "wrong 4")
        log = server.wait_for_log_lines("authentication failed", 4)
        ips = fail2ban_ips(log, tmp_path)
    assert ips == ["198.51.100.7", "198.51.100.7", "2001:db8::7", "127.0.0.1"]

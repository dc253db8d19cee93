"""examples/cluster/: the script runs the whole stack end to end; its files are valid.

``run.py`` starts Dovecot, PostgreSQL, two fronts and HAProxy on loopback,
provisions a key through the balancer, checks a fetched message with
``openssl cms -decrypt``, drives a short load and stops every process by
PID: the test checks its summary and that none of the PIDs it printed runs
afterwards.  The hoster's files: ``haproxy -c`` accepts haproxy.cfg, and the
systemd unit's ``twistd`` command line, with the environment file's values,
is accepted by the server's option parser; the audit prune unit runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO
from tests.postgres import PostgresServer
from transcoder.backend.dovecot import DovecotInstance
from transcoder.cluster import haproxy
from transcoder.cluster.postgres import postgres_bin
from transcoder.keys.pg_keystore import PgKeyStore

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "cluster"


def test_the_script_runs_the_stack_end_to_end() -> None:
    """Exit 0, the key provisioned and used, load without errors on both fronts, all stopped."""
    if not DovecotInstance.installed() or haproxy.binary() is None:
        pytest.skip("dovecot-imapd and haproxy are needed")
    if postgres_bin("initdb") is None:
        pytest.skip("postgresql is needed")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), "--clients", "4", "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "provisioned demo@example.org.crt through the balancer; policy ALWAYS" in out
    assert "decrypted (openssl cms): opened, the message is there" in out
    load = re.search(r"(\d+) commands \(\d+/s\), (\d+) sessions, (\d+) errors", out)
    assert load and int(load.group(1)) > 0 and load.group(3) == "0", out
    logins = dict(re.findall(r"(front\d) (\d+)", out.split("logins per front:")[1].split("\n")[0]))
    assert set(logins) == {"front1", "front2"} and all(int(n) > 0 for n in logins.values())
    assert "summary: OK" in out and "stopped: every process by its PID" in out
    pids = [int(p) for p in re.findall(r"\w+ (\d+)", out.split("running (pid):")[1].split("\n")[0])]
    assert len(pids) == 5
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"pid {pid} still runs"


def _zombie(pid: int) -> bool:
    try:
        return " Z " in open(f"/proc/{pid}/stat").read()
    except OSError:
        return True


def test_haproxy_accepts_the_example_configuration() -> None:
    """``haproxy -c`` on examples/cluster/haproxy.cfg; it sends PROXY v2 and checks health."""
    binary = haproxy.binary()
    if binary is None:
        pytest.skip("haproxy is not installed")
    text = (EXAMPLE / "haproxy.cfg").read_text()
    assert "send-proxy-v2" in text and "check-send-proxy" in text and "mode tcp" in text
    done = subprocess.run(
        [binary, "-c", "-f", str(EXAMPLE / "haproxy.cfg")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_front_unit_starts_a_valid_front() -> None:
    """The unit's ExecStart, with transcoder-front.env's values, parses as twistd transcoder's
    options: haproxy: endpoints, --backend, --keystore postgresql://, --view-secret."""
    from transcoder.service import Options

    env = dict(
        line.split("=", 1)
        for line in (EXAMPLE / "transcoder-front.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    unit = (EXAMPLE / "transcoder-front.service").read_text().replace("\\\n", " ")
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    words = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], exec_start))
    args = words[words.index("transcoder") + 1 :]
    for local_file in ("--backend-ca", "--tls-cert", "--tls-key"):  # the hoster's files
        at = args.index(local_file)
        del args[at : at + 2]
    options = Options()
    options.parseOptions(args)
    assert options["imap"].startswith("haproxy:tcp:143:") and options["keystore"].startswith(
        "postgresql://"
    )
    assert options["view-secret"] and options["backend"] is not None


def test_the_audit_prune_unit_prunes_the_shared_trail(postgresql: PostgresServer) -> None:
    """The prune unit's ExecStart, with the env file's KEYSTORE pointed at a real PostgreSQL,
    runs transcoder-admin audit prune (exit 0, the cut recorded); its timer starts it daily."""
    unit = (EXAMPLE / "transcoder-audit-prune.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    dsn = postgresql.new_database()
    words = shlex.split(exec_start.replace("${KEYSTORE}", dsn))
    assert words[0].endswith("/transcoder-admin")
    done = subprocess.run(
        [sys.executable, "-m", "transcoder.admin", *words[1:]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 0 audit records dated before ")
    with PgKeyStore(dsn) as store:
        assert [r["event"] for r in store.audit_records()] == ["audit.pruned"]
    timer = (EXAMPLE / "transcoder-audit-prune.timer").read_text()
    assert "OnCalendar=daily" in timer and "WantedBy=timers.target" in timer

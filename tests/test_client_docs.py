"""Every command README.md and docs/xkey.md show runs as written (issue 13).

Each document's fenced ``sh`` and ``python`` blocks are read from the file
-- not copied here -- and run in order, as one shell session, in a fresh
copy of the project (what ``git clone`` gives), the way a new user would
type them:

* ``sh`` lines run in bash, ``set -e``: any failing command fails the test.
  A line that starts a server (``twistd ... -n transcoder``) is put in the
  background, as a second terminal would, and the next command waits for
  its greeting.  ``python`` blocks run with the session's ``python``, the
  password typed on standard input (``getpass`` reads it there without a
  terminal).
* The session runs in a network namespace of its own (``unshare -n``), so
  the servers listen on the documented ports (1143, 1993, 1144) whatever
  else runs on this machine; without one, those ports must be free here.
* The README's install (``python3 -m venv .venv && .venv/bin/pip install .``)
  runs as written but offline: the new virtualenv sees this environment's
  packages through a ``.pth`` file (and gets Twisted's ``twistd`` script, as
  installing Twisted there would write it), and pip is told
  (``PIP_NO_INDEX``, ``PIP_NO_BUILD_ISOLATION``) to find everything there --
  the dependencies are the only thing not taken from PyPI.
* ``HOME`` and ``GNUPGHOME`` are the session's own, so ``transcoder-client
  configure`` and gpg write there.  The one password the commands need is the
  demo account's, printed by ``transcoder-admin ... --generate``; like a user
  who copies it, the session puts it in ``$TRANSCODER_PASSWORD``, which
  ``transcoder-client`` reads instead of prompting.

The only command not run is ``make test``: it is this test suite, which CI
runs as ``.ci/run``.  Blocks marked ``text`` are synopses and sample output;
the README's server synopsis is checked against its option table and the
server's options below, the client's and transcoder-admin's against their
parsers.  docs/xkey.md's IMAP transcripts (``C:``/``S:``) are replayed, in
order, as one session of alice@example.org against the real server; only
the ``NO [CANNOT]`` one is not (it needs a server without a keystore).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

#: Commands a document shows that this test does not run, and why.
NOT_RUN = {"make test": "the test suite itself; .ci/run runs it"}
#: Lines that start a server: run in the background, then wait for its port.
SERVER = re.compile(r"twistd\b.*-n transcoder\b")
#: gpgsm 2.2 misreads about one fresh PKCS#12 in forty (docs/xkey.md says so, and to retry).
RETRIED = ("gpgsm", 5)
SESSION_TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language tag, text and first line number."""

    language: str
    text: str
    line: int


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    blocks: list[Block] = []
    language: str | None = None
    lines: list[str] = []
    start = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and language is None:
            language, lines, start = fence.group(1), [], number + 1
        elif fence:
            blocks.append(Block(language, "\n".join(lines) + "\n", start))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"{path}: unterminated code block from line {start}"
    return blocks


def commands(block: Block) -> list[str]:
    """The command lines of an ``sh`` block (comments and blank lines left out)."""
    return [ln for ln in block.text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def server_port(line: str) -> str:
    """The port the server started by ``line`` greets on (its --imap, else 1143)."""
    found = re.search(r"--imap[ =]tcp:(\d+)", line)
    return found.group(1) if found else "1143"


PRELUDE = r"""
set -e -o pipefail
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT
greeted() {
  "$DOC_PYTHON" -c "import socket as s, sys
c = s.create_connection(('127.0.0.1', $1), 1)
sys.exit(0 if c.recv(4) == b'* OK' else 1)" 2>/dev/null
}
wait_port() {  # the greeting of a server started in the background
  for _ in $(seq 300); do
    if greeted "$1"; then return 0; fi
    sleep 0.1
  done
  echo "no greeting on port $1" >&2; return 1
}
retry() {  # retry N: run the block again, up to N times
  local n=$1; shift
  for i in $(seq "$n"); do "$@" && return 0; echo "::retry $i" >&2; done
  return 1
}
"""


def session_script(documents: list[Path], folder: Path) -> tuple[str, list[str]]:
    """The bash script running every ``sh`` and ``python`` block of ``documents`` in order;
    and the commands it runs (for the coverage check)."""
    parts = [PRELUDE]
    ran: list[str] = []
    for document in documents:
        for index, block in enumerate(code_blocks(document)):
            where = f"{document.name}:{block.line}"
            if block.language == "python":
                script = folder / f"block-{document.stem}-{index}.py"
                script.write_text(block.text)
                parts.append(f'echo "::run {where} (python)" >&2')
                parts.append(f'python {shlex.quote(str(script))} <<< "$TRANSCODER_PASSWORD"')
                ran.append(block.text)
                continue
            if block.language != "sh":
                continue
            lines = [c for c in commands(block) if c not in NOT_RUN]
            ran += lines
            body = []
            for line in lines:
                body.append(f"echo {shlex.quote(f'::run {where}: {line}')} >&2")
                if SERVER.search(line):
                    body += [f"{line} &", f"wait_port {server_port(line)}"]
                    if "user add demo@localhost --generate" in line:
                        # The user copies the printed password.
                        body.append(
                            "export TRANSCODER_PASSWORD=\"$(sed -n 's/^password: //p' "
                            '"$DOC_OUT" | tail -1)"'
                        )
                else:
                    body.append(line)
            if any(RETRIED[0] in line for line in lines):
                name = f"block_{document.stem.replace('-', '_')}_{index}"
                parts.append(f"{name}() {{\n" + "\n".join(body) + "\n}")
                parts.append(f"retry {RETRIED[1]} {name}")
            else:
                parts += body
    return "\n".join(parts) + "\n", ran


def network_namespace() -> list[str]:
    """``unshare -n`` with loopback up, when this machine allows it; else nothing."""
    probe = ["unshare", "-n", "sh", "-c", "ip link set lo up"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec bash "$0"'] if ok else []


def ports_free(*ports: int) -> bool:
    import socket

    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def fresh_clone(target: Path) -> Path:
    """The checkout's files as a clone would have them if everything were committed: tracked
    and new files as they are now, nothing git ignores (.venv, data, build, caches).

    Outside a git checkout (an exported tree, ``git archive``) every file is copied
    but the ones a run makes: the virtual environment, caches, build output.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listing.returncode == 0:
        names = [n.decode() for n in listing.stdout.split(b"\0") if n]
    else:
        made = {".venv", "data", "build", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
        names = [
            str(path.relative_to(REPO))
            for path in REPO.rglob("*")
            if not made.intersection(path.relative_to(REPO).parts)
            and "__pycache__" not in path.parts
            and not path.name.endswith(".egg-info")
            and not any(part.endswith(".egg-info") for part in path.relative_to(REPO).parts)
        ]
    for name in names:
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@dataclass
class Session:
    """A folder, environment and isolation to run documented commands in."""

    folder: Path
    env: dict[str, str]
    isolate: list[str]

    def run(self, script: str) -> tuple[int, str]:
        """Run ``script`` (bash); return its status and everything it printed."""
        path = self.folder / "session.sh"
        path.write_text(script)
        out = Path(self.env["DOC_OUT"])
        command = [*self.isolate, str(path)] if self.isolate else ["bash", str(path)]
        with open(out, "wb") as sink:
            process = subprocess.Popen(
                command,
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no controlling terminal: getpass reads stdin
            )
            try:
                status = process.wait(timeout=SESSION_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                status = -1
        # Whatever the session left behind (a server it could not stop) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return status, out.read_text(errors="replace")


def make_session(tmp_path: Path, folder: Path) -> Session:
    """A session in ``folder`` with its own HOME and GNUPGHOME and this machine's tools."""
    isolate = network_namespace()
    if not isolate and not ports_free(1143, 1993, 1144):
        pytest.skip("no network namespace (unshare -n) and the documented ports are taken")
    home = tmp_path / "home"
    home.mkdir()
    gnupg = Path(f"/tmp/tcdoc-{os.getpid()}-{tmp_path.name[-8:]}")  # short: agent sockets
    gnupg.mkdir(mode=0o700)
    # python3 is the interpreter this environment's packages were built for.
    tools = tmp_path / "tools"
    tools.mkdir()
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    for name in ("python3", "python"):
        (tools / name).symlink_to(base)
    path = [str(tools), *os.environ.get("PATH", "").split(os.pathsep)]
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": os.pathsep.join(p for p in path if p and p != venv_bin),
        "HOME": str(home),
        "GNUPGHOME": str(gnupg),
        "LANG": "C.UTF-8",
        "DOC_PYTHON": sys.executable,
        "DOC_OUT": str(tmp_path / "session.out"),
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip reads this negated: no build isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return Session(folder, env, isolate)


def stop_gpg_agent(session: Session) -> None:
    gnupg = session.env["GNUPGHOME"]
    subprocess.run(
        ["gpgconf", "--kill", "all"],
        env={**os.environ, "GNUPGHOME": gnupg},
        capture_output=True,
        timeout=30,
        check=False,
    )
    shutil.rmtree(gnupg, ignore_errors=True)


def offline_venv(folder: Path) -> None:
    """``folder/.venv`` made beforehand, seeing this environment's site-packages: the
    README's ``python3 -m venv .venv`` then finds it and ``pip install .`` runs offline."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    subprocess.run([str(base), "-m", "venv", str(folder / ".venv")], check=True, timeout=300)
    site = subprocess.run(
        [
            str(folder / ".venv" / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Twisted's console script, as pip installing Twisted there would have written it.
    twistd = folder / ".venv" / "bin" / "twistd"
    twistd.write_text(
        f"#!{folder / '.venv' / 'bin' / 'python'}\n"
        "import sys\nfrom twisted.scripts.twistd import run\nsys.exit(run())\n"
    )
    twistd.chmod(0o755)


def require_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            pytest.skip(f"{name} is not installed")


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    """The quick start from a fresh clone: install, start the server, a second server, the
    client's one setup step, a test identity provisioned over STARTTLS against the generated
    certificate, encryption on, imaplib fetches ciphertext, openssl cms decrypts it."""
    require_tools("openssl", "gpg")
    clone = fresh_clone(tmp_path / "clone")
    offline_venv(clone)
    session = make_session(tmp_path, clone)
    script, ran = session_script([REPO / "README.md"], tmp_path)
    try:
        status, output = session.run(script)
    finally:
        stop_gpg_agent(session)
    assert status == 0, output[-6000:]
    # What the commands did, seen from outside.
    assert "added demo@localhost" in output
    assert "stored:     " in output  # provision over STARTTLS, verified with --cafile
    assert "mode: ALWAYS" in output
    assert "Content-Type: application/pkcs7-mime" in (clone / "hi.eml").read_text()
    assert "hello" in output.split("openssl cms -decrypt")[-1]  # the plaintext, decrypted
    config = (tmp_path / "home" / ".config" / "transcoder" / "client.conf").read_text()
    assert f"cafile = {clone / 'data' / 'tls' / 'server.crt'}" in config
    assert ran, "the README shows no command"


def test_xkey_doc_commands_run_as_written(tmp_path: Path) -> None:
    """docs/xkey.md's recipes and client commands against a running server: openssl makes an
    acceptable certificate and a PKCS#12 gpgsm 2.2 imports, gpg a key with an encryption
    subkey, new-identity both; the client provisions them over STARTTLS, replacing one."""
    require_tools("openssl", "gpg", "gpgsm")
    work = tmp_path / "work"
    work.mkdir()
    session = make_session(tmp_path, work)
    # What the README's quick start leaves behind: a server and the user's account.
    start = (
        f"{shlex.quote(sys.executable)} -m transcoder.admin --data ./data user add "
        'alice@example.org <<< "$TRANSCODER_PASSWORD"\n'
        f"{shlex.quote(sys.executable)} -c 'from twisted.scripts.twistd import run; run()' "
        "--pidfile= -n transcoder --data ./data &\nwait_port 1143\n"
    )
    session.env["TRANSCODER_PASSWORD"] = "alice's password"
    session.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), session.env["PATH"]])
    body, ran = session_script([REPO / "docs" / "xkey.md"], tmp_path)
    script = body.replace(PRELUDE, PRELUDE + start, 1)
    try:
        status, output = session.run(script)
    finally:
        stop_gpg_agent(session)
    assert status == 0, output[-6000:]
    assert "superseded: " in output and " RETIRED " in output
    assert "a full resync" in output  # the replacement under MODE ALWAYS says what it costs
    assert "secret keys read: 1" in output or "secret keys imported: 1" in output, output
    assert ran


# -- synopses --------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_server_synopsis_lists_every_option_of_its_table() -> None:
    """The twistd synopsis and the option table of "Running it" name the same options, and
    each is an option of the server."""
    from transcoder.service import Options

    section = readme_section("## Running it")
    synopsis = next(b.text for b in code_blocks_of(section) if "twistd" in b.text)
    in_synopsis = set(re.findall(r"--[a-z][a-z-]+", synopsis)) - {"--pidfile"}
    row = r"^\| `(--[a-z-]+)[^`]*`(?:, `(--[a-z-]+)[^`]*`)?"
    table = set(re.findall(row, section, re.MULTILINE))
    in_table = {name for pair in table for name in pair if name}
    assert in_synopsis == in_table, in_synopsis ^ in_table
    options = Options()
    known = {f"--{p[0]}" for p in options.optParameters}
    known |= {f"--{f[0]}" for f in options.optFlags}
    assert in_table <= known, in_table - known


def code_blocks_of(text: str) -> list[Block]:
    """The fenced blocks of a piece of Markdown."""
    blocks: list[Block] = []
    language: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence:
            blocks.append(Block(language, "\n".join(lines) + "\n", 0))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def test_client_synopsis_matches_its_parser() -> None:
    """Every option and command the README's transcoder-client synopsis shows exists."""
    from transcoder.client.cli import build_parser

    section = readme_section("### transcoder-client")
    (synopsis,) = [b.text for b in code_blocks_of(section) if b.language == "text"][:1]
    parser = build_parser()
    commands_shown = {
        line.split()[0]: line for line in synopsis.splitlines() if re.match(r"^  [a-z]", line)
    }
    assert set(commands_shown) == set(_subparsers(parser)), commands_shown
    for option in set(re.findall(r"--[a-z][a-z-]+", synopsis)):
        owners = [c for c, line in commands_shown.items() if option in line]
        where = [_subparsers(parser)[c] for c in owners] or [parser]
        for owner in where:
            assert option in owner.format_help(), (option, owners)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


#: Placeholder words of the synopses, and a value each stands for.
PLACEHOLDERS = {
    "DIR": "./data",
    "ADDRESS": "alice@example.org",
    "FILE": "key.pem",
    "PATH": "gpg",
    "FINGERPRINT": "ab" * 32,
    "NAME": "Archive",
}


def synopsis_variants(line: str) -> list[list[str]]:
    """``line``'s arguments without its optional ``[...]`` groups, and with each of them
    (``a|b`` choices: the first), placeholders filled in."""
    line = line.split("#", 1)[0].split("<", 1)[0]
    groups = re.findall(r"\[([^\]]+)\]", line)
    bare = re.sub(r"\[[^\]]+\]", " ", line)
    variants = [bare] + [f"{bare} {group}" for group in groups]
    result = []
    for variant in variants:
        words = [w.split("|")[0] for w in variant.split()[1:]]
        result.append([PLACEHOLDERS.get(w, w) for w in words])
    return result


def test_admin_synopses_parse() -> None:
    """Every transcoder-admin synopsis line in the README is accepted by its parser, with and
    without each optional part."""
    from transcoder.admin import build_parser

    lines = [
        line
        for block in code_blocks(REPO / "README.md")
        if block.language == "text"
        for line in block.text.splitlines()
        if line.startswith("transcoder-admin ")
    ]
    assert len(lines) >= 10
    for line in lines:
        for argv in synopsis_variants(line):
            build_parser().parse_args(argv)  # exits 2, failing the test, when it is wrong


# -- the documents stand on their own ----------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            found.add(title.replace(" ", "-"))
    return found


@pytest.mark.parametrize(
    "document", ["README.md", "docs/design.md", "docs/xkey.md", "docs/fail2ban.md"]
)
def test_links_stay_in_the_repository_and_resolve(document: str) -> None:
    """Every link that is not a web address names a file of the repository (and a heading
    of it, when it has an anchor): the documents need nothing outside the project."""
    path = REPO / document
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        name, _, anchor = target.partition("#")
        linked = (path.parent / name).resolve() if name else path
        assert linked.is_relative_to(REPO) and linked.exists(), (document, target)
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), (document, target)


def test_design_document_covers_the_system() -> None:
    """docs/design.md has the parts issue 13 asks of it: layers, invariants, the view, XKEY,
    and says what a key change costs a client."""
    text = (REPO / "docs" / "design.md").read_text()
    for heading in (
        "## Layers",
        "## Invariants",
        "## The transcoded view",
        "## Protocol: XKEY",
    ):
        assert f"\n{heading}" in text, heading
    assert "full resync" in text and "view_epochs.py" in text
    assert "shared design notes" not in text


# -- docs/xkey.md's transcripts, replayed ----------------------------------------------------

#: Transcripts not replayed, by a text of theirs, and why.
NOT_REPLAYED = {
    "NO [CANNOT]": "needs a server embedded without a keystore or an account without an address",
}
FINGERPRINT = re.compile(r"\b([0-9a-f]{64}|[0-9a-f]{40})\b")
COMMAND = re.compile(r"^[a-z]+\d+ ")


@dataclass(frozen=True)
class Exchange:
    """One command of a transcript: its line, whether literal data follows it in the
    transcript, and the server lines shown up to the next command."""

    command: str
    expected: tuple[str, ...]


def transcripts(path: Path) -> list[tuple[str, list[Exchange]]]:
    """Every ``C:``/``S:`` block of ``path`` as (its section heading, its exchanges)."""
    found = []
    heading = ""
    text = path.read_text()
    for block in code_blocks(path):
        before = text[: text.index(block.text)] if block.text in text else ""
        heading = next((ln for ln in reversed(before.splitlines()) if ln.startswith("#")), "")
        lines = [ln for ln in block.text.splitlines() if ln.startswith(("C: ", "S: "))]
        if not any(ln.startswith("C: ") for ln in lines):
            continue
        exchanges: list[Exchange] = []
        command, expected = None, []
        for line in lines:
            kind, body = line[0], line[3:]
            if kind == "C" and COMMAND.match(body):
                if command is not None:
                    exchanges.append(Exchange(command, tuple(expected)))
                command, expected = body, []
            elif kind == "S":
                expected.append(body)
        assert command is not None
        exchanges.append(Exchange(command, tuple(expected)))
        found.append((heading, exchanges))
    return found


class Wire:
    """A plain IMAP connection on loopback that reads whole lines."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        assert self.line().startswith("* OK")

    def line(self) -> str:
        return self.reader.readline().decode("utf-8").rstrip("\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until_tagged(self, tag: str, first: list[str] | None = None) -> list[str]:
        lines = list(first or [])
        while not lines or not lines[-1].startswith(f"{tag} "):
            lines.append(self.line())
        return lines

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@dataclass
class Replay:
    """What binds the transcript's values to the real ones across the whole document."""

    fingerprints: dict[str, str]
    uidvalidities: list[tuple[int, int]]

    def normal(self, line: str, real: bool) -> str:
        line = FINGERPRINT.sub("<fp>", line)
        line = re.sub(r'NOT-(AFTER|BEFORE) "[^"]*"', r"NOT-\1 <date>", line)
        line = re.sub(r"\{\d+\}$", "{<n>}", line)  # XKEY SERVER's MATERIAL literal
        line = re.sub(r"Ready for \d+ octets", "Ready for <n> octets", line)
        return re.sub(r"UIDVALIDITY \d+", "UIDVALIDITY <n>", line)

    def matches(self, expected: str, actual: str) -> bool:
        if self.normal(expected, False) != self.normal(actual, True):
            return False
        shown, real = FINGERPRINT.findall(expected), FINGERPRINT.findall(actual)
        for doc, got in zip(shown, real, strict=True):
            if self.fingerprints.setdefault(doc, got) != got:
                return False
        found = re.search(r"UIDVALIDITY (\d+)", expected)
        if found:
            real_value = re.search(r"UIDVALIDITY (\d+)", actual)
            assert real_value is not None
            self.uidvalidities.append((int(found.group(1)), int(real_value.group(1))))
        return True

    def check(self, exchange: Exchange, actual: list[str]) -> None:
        """Each line the transcript shows is among the server's, in order."""
        position = 0
        for expected in exchange.expected:
            while position < len(actual) and not self.matches(expected, actual[position]):
                position += 1
            assert position < len(actual), (exchange.command, expected, actual)
            position += 1


def test_xkey_transcripts_replay(tmp_path: Path, pgp_keys: object) -> None:
    """Every C: line of docs/xkey.md's transcripts, sent in order on one session of
    alice@example.org, draws the S: lines shown (fingerprints, dates, sizes and UIDVALIDITY
    values bound to the real ones), with keys made here for the literals."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
    from tests.integration.test_xkey import fresh_cert
    from tests.keyfactory import PgpKeys
    from tests.keys.certs import der, pem

    assert isinstance(pgp_keys, PgpKeys)
    material = {
        "a2": pem(fresh_cert(ec.generate_private_key(ec.SECP256R1()))),
        "a3": pem(fresh_cert(ec.generate_private_key(ec.SECP256R1()))),
        "a7": der(fresh_cert(ec.generate_private_key(ec.SECP256R1()), "bob@example.org")),
        "a10": pgp_keys.alice_rsa_armored,
    }
    data = tmp_path / "data"
    assert admin(data, "user", "add", "alice@example.org", stdin=PASSWORD + "\n").returncode == 0
    server = RunningServer(data, free_port(), free_port())
    server.start()
    replay = Replay({}, [])
    replayed = 0
    session = Wire(server.imap_port)
    try:
        session.send(b'x0 LOGIN alice@example.org "' + PASSWORD.encode() + b'"\r\n')
        assert session.until_tagged("x0")[-1].startswith("x0 OK")
        for _, exchanges in transcripts(REPO / "docs" / "xkey.md"):
            shown = " ".join(" ".join(e.expected) for e in exchanges)
            if any(marker in shown for marker in NOT_REPLAYED):
                continue
            wire = Wire(server.imap_port) if "not authenticated state" in shown else session
            for exchange in exchanges:
                replay.check(exchange, send(wire, exchange, material, replay))
                replayed += 1
            if wire is not session:
                wire.close()
        session.send(b"x9 LOGOUT\r\n")
    finally:
        session.close()
        server.stop()
    assert replayed >= 16, replayed
    assert replay.uidvalidities, "no SELECT replayed"
    doc_order = [doc for doc, _ in replay.uidvalidities]
    real_order = [real for _, real in replay.uidvalidities]
    assert sorted(range(len(doc_order)), key=doc_order.__getitem__) == sorted(
        range(len(real_order)), key=real_order.__getitem__
    )
    assert len(set(real_order)) == len(set(doc_order))


def send(wire: Wire, exchange: Exchange, material: dict[str, bytes], replay: Replay) -> list[str]:
    """Send one transcript command (its literal replaced by real material); the answer."""
    command = exchange.command
    tag = command.split()[0]
    for doc, real in replay.fingerprints.items():
        command = command.replace(doc, real)
    literal = re.search(r"\{(\d+)(\+?)\}$", command)
    if literal is None:
        wire.send(command.encode() + b"\r\n")
        return wire.until_tagged(tag)
    octets = material.get(tag)
    if octets is None:  # announced, never sent (refused before the continuation)
        wire.send(command.encode() + b"\r\n")
        return wire.until_tagged(tag)
    line = f"{command[: literal.start()]}{{{len(octets)}{literal.group(2)}}}"
    if literal.group(2):  # LITERAL+: no continuation request
        wire.send(line.encode() + b"\r\n" + octets + b"\r\n")
        return wire.until_tagged(tag)
    wire.send(line.encode() + b"\r\n")
    first = wire.line()
    if not first.startswith("+"):
        return wire.until_tagged(tag, [first])
    wire.send(octets + b"\r\n")
    return wire.until_tagged(tag, [first])


def test_xkey_bye_text_is_the_servers() -> None:
    """The BYE docs/xkey.md shows (a response, not a command) is the server's own text."""
    shown = next(
        ln[3:]
        for b in code_blocks(REPO / "docs" / "xkey.md")
        for ln in b.text.splitlines()
        if ln.startswith("S: * BYE ")
    )
    from transcoder.imap.view_epoch import BYE

    assert shown == "* " + BYE.decode()

"""What each load-generator client does: sessions of pipelined rounds on a shared INBOX.

A client runs sessions back to back until the deadline.  A session is::

    LOGIN                                  (alone: its OK carries CAPABILITY)
    LIST "" "*" / STATUS Archive / SELECT INBOX / UID FETCH 1:* (FLAGS)
    --rounds x one pipelined round:
        FETCH a:b (UID FLAGS RFC822.SIZE), FETCH h (UID BODY.PEEK[HEADER]),
        FETCH x (UID RFC822.SIZE BODY.PEEK[]), STORE s +FLAGS (\\Seen),
        STORE k +FLAGS (<keyword>), [SEARCH ...,]
        [STORE d +FLAGS.SILENT (\\Deleted), EXPUNGE,] [UID SEARCH ...,]
        APPEND INBOX (<flags>) {4 KB}, [STATUS Archive,] NOOP
    IDLE for --idle seconds
    LOGOUT

The sequence numbers of a round are drawn from the message count the
client knows when it writes the round.  A pipeline is valid by RFC 3501
section 5.5: the commands naming sequence numbers (FETCH, STORE, SEARCH)
come first, before any other command, so they stay valid whatever other
sessions do -- no EXPUNGE may be reported before they are all done (7.4.1).
Keywords come from a small pool ($Label1..5, Junk,
NonJunk, $Forwarded): each is new to a mailbox the first time a STORE or an
APPEND uses it, which must make the server announce it in ``* FLAGS``.
Several clients log in to the same account, so their EXPUNGEs, EXISTS and
flag changes cross sessions.  A round deletes one message only while the
mailbox holds more than ``low_water`` messages; each round appends one.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from common import small_message
from load_checks import ErrorLog
from load_client import Connection, SessionAborted, Spec, Stats

KEYWORDS = (
    b"$Label1",
    b"$Label2",
    b"$Label3",
    b"$Label4",
    b"$Label5",
    b"Junk",
    b"NonJunk",
    b"$Forwarded",
)
APPEND_FLAGS = (b"()", b"(\\Seen)", b"(\\Seen Junk)", b"($Label2)", b"(NonJunk $Label5)")
SEARCHES = (
    b"UNSEEN",
    b"KEYWORD $Label1",
    b'FROM "sender1"',
    b"SEEN NOT DELETED",
    b"LARGER 4000 KEYWORD Junk",
)


@dataclass(frozen=True)
class Account:
    """A test account: its login and password."""

    address: str
    password: str


@dataclass(frozen=True)
class Mix:
    """How clients behave; see the module docstring."""

    rounds: int = 5
    idle: float = 0.2
    window: int = 10
    low_water: int = 50
    timeout: float = 60.0


def opening() -> list[Spec]:
    """What a client sends after LOGIN: list, status, select, then sync the flags."""
    return [
        Spec("LIST", b'LIST "" "*"'),
        Spec("STATUS", b"STATUS Archive (MESSAGES UIDNEXT UNSEEN)"),
        Spec("SELECT", b"SELECT INBOX"),
        Spec("UID FETCH", b"UID FETCH 1:* (FLAGS)"),
    ]


def round_specs(count: int, mix: Mix, rng: random.Random) -> list[Spec]:
    """One pipelined round for a mailbox of ``count`` messages.

    RFC 3501 section 5.5: after any command but FETCH, STORE or SEARCH a
    client must wait before naming sequence numbers, so those come first.
    """
    specs = []
    if count:
        first = rng.randint(1, count)
        last = min(count, first + mix.window - 1)
        seen, marked, keyword = rng.randint(1, count), rng.randint(1, count), rng.choice(KEYWORDS)
        specs += [
            Spec("FETCH flags", b"FETCH %d:%d (UID FLAGS RFC822.SIZE)" % (first, last)),
            Spec("FETCH header", b"FETCH %d (UID BODY.PEEK[HEADER])" % rng.randint(1, count)),
            Spec("FETCH body", b"FETCH %d (UID RFC822.SIZE BODY.PEEK[])" % rng.randint(1, count)),
            Spec("STORE", b"STORE %d +FLAGS (\\Seen)" % seen, stored=(seen, b"\\Seen")),
            Spec("STORE", b"STORE %d +FLAGS (%s)" % (marked, keyword), stored=(marked, keyword)),
        ]
    search = b"SEARCH " + rng.choice(SEARCHES)
    uid_search = rng.random() < 0.5
    if not uid_search:
        specs.append(Spec("SEARCH", search))
    if count > mix.low_water:
        specs.append(Spec("STORE", b"STORE %d +FLAGS.SILENT (\\Deleted)" % rng.randint(1, count)))
        specs.append(Spec("EXPUNGE", b"EXPUNGE"))
    if uid_search:
        specs.append(Spec("UID SEARCH", b"UID " + search))
    message = small_message(rng.randrange(10**9))
    specs.append(Spec("APPEND", b"APPEND INBOX " + rng.choice(APPEND_FLAGS), literal=message))
    if rng.random() < 0.3:
        specs.append(Spec("STATUS", b"STATUS Archive (MESSAGES UIDNEXT UNSEEN)"))
    specs.append(Spec("NOOP", b"NOOP"))
    return specs


async def session(
    port: int, account: Account, mix: Mix, errors: ErrorLog, stats: Stats, rng: random.Random
) -> None:
    """One session, from connecting to LOGOUT; raises SessionAborted if it cannot go on."""
    loop = asyncio.get_running_loop()
    connection = await Connection.open(port, errors, stats, mix.timeout)
    try:
        login = b'LOGIN "%s" "%s"' % (account.address.encode(), account.password.encode())
        (answer,) = await connection.run([Spec("LOGIN", login)])
        if answer.name != b"OK":
            raise SessionAborted("LOGIN refused")
        *_, selected, _ = await connection.run(opening())
        if selected.name != b"OK" or connection.checker.view is None:
            raise SessionAborted("SELECT refused")
        for _ in range(mix.rounds):
            if loop.time() >= stats.deadline:
                break
            await connection.run(round_specs(connection.checker.view.count, mix, rng))
        if mix.idle and loop.time() < stats.deadline:
            await connection.idle(mix.idle)
        await connection.run([Spec("LOGOUT", b"LOGOUT")])
    finally:
        await connection.close()


async def client(
    port: int, account: Account, mix: Mix, errors: ErrorLog, stats: Stats, seed: int
) -> None:
    """Sessions back to back until the deadline."""
    loop, rng = asyncio.get_running_loop(), random.Random(seed)
    while loop.time() < stats.deadline:
        try:
            await session(port, account, mix, errors, stats, rng)
        except SessionAborted:
            await asyncio.sleep(0.1)
        except OSError as e:
            errors.add(f"cannot connect: {type(e).__name__}", str(e))
            await asyncio.sleep(0.5)

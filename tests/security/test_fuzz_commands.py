"""Grammar fuzzing of whole commands: every hostile command gets exactly one clear answer.

Commands of RFC 3501 and its extensions, with mutated arguments (see
:mod:`tests.security.imap_grammar`), go through the real server protocol over
a real Maildir, in each session state.  What must hold (docs/design.md,
invariant 5): every command gets exactly one tagged ``OK``/``NO``/``BAD``
with its own tag -- or, after LOGOUT or too many failed logins, a ``BYE`` --
an invalid tag an untagged ``BAD``; never ``NO [SERVERBUG]``; no traceback or
critical event is logged; the connection still answers NOOP; the store holds
only octets clients put there.  The CI profile runs a fixed set of
examples in seconds; ``HYPOTHESIS_PROFILE=long`` runs a hundred times more
(tests/security/README.md).
"""

from __future__ import annotations

import gc
import random

from hypothesis import given
from hypothesis import strategies as st

from tests.security.fuzzing import scaled, scratch, watching_log
from tests.security.imap_grammar import CommandFuzzer, FuzzCommand
from tests.security.protocol_fuzz import (
    FUZZ_BIG,
    Outcome,
    answer_problems,
    open_client,
    responses,
    store_problems,
)

STATES = st.sampled_from(["unauth", "auth", "select"])


def describe(outcome: Outcome) -> str:
    """A failing command and the server's answer, short enough to read."""
    return f"sent {outcome.command.wire[:300]!r}\nanswer {outcome.output[:300]!r}"


@scaled(60)
@given(
    rng=st.randoms(use_true_random=False),
    state=STATES,
    count=st.integers(1, 30),
    later=st.booleans(),
)
def test_every_fuzzed_command_gets_one_clear_answer(
    rng: random.Random, state: str, count: int, later: bool
) -> None:
    """Fuzzed commands, one at a time: one tagged answer each, no SERVERBUG, store intact.

    ``later``: the keystore answers in a later turn, as the real server's pool does.
    """
    with scratch() as directory, watching_log() as log:
        client = open_client(directory, state, later=later)
        fuzzer = CommandFuzzer(rng, password=b"", big=FUZZ_BIG)
        sent: list[Outcome] = []
        for index in range(count):
            outcome = client.run(fuzzer.command(index, client.state))
            sent.append(outcome)
            problems = answer_problems(outcome)
            assert not problems, f"{problems}\n{describe(outcome)}"
            if outcome.closed:
                break
        assert client.noop_works(), describe(sent[-1])
        assert not store_problems(client, sent)
        if client.keystore is not None:
            client.keystore.close()
        gc.collect()  # a Deferred failing unhandled logs when it is collected
    assert not log.problems(), log.problems()


def pipelinable(command: FuzzCommand) -> bool:
    """Whether a client may send ``command`` without waiting for anything (no "+" needed)."""
    return len(command.segments) == 1 and command.tagged and command.name != b"LOGOUT"


@scaled(40)
@given(rng=st.randoms(use_true_random=False), state=STATES, count=st.integers(2, 30))
def test_pipelined_fuzzed_commands_each_answered_once(
    rng: random.Random, state: str, count: int
) -> None:
    """Fuzzed commands sent in one go (RFC 3501 section 5.5): each tag answered exactly once."""
    with scratch() as directory, watching_log() as log:
        client = open_client(directory, state)
        fuzzer = CommandFuzzer(rng, big=FUZZ_BIG)
        commands = [c for c in (fuzzer.command(i, state) for i in range(count)) if pipelinable(c)]
        everything = FuzzCommand(b"", b"PIPELINE", (b"".join(c.wire for c in commands),))
        output = client.run(everything).output
        if not client.closed:
            output += client.run(FuzzCommand(b"", b"NOOP", (b"",))).output
        answered = [r.split(b" ", 1)[0] for r in responses(output) if not r.startswith(b"* ")]
        assert b"SERVERBUG" not in output, output[:2000]
        if not client.closed:
            expected = [c.tag for c in commands if c.tag]
            assert [t for t in answered if t != b"+"] == expected, output[:2000]
            assert client.noop_works()
        if client.keystore is not None:
            client.keystore.close()
        gc.collect()
    assert not log.problems(), log.problems()


@scaled(40)
@given(
    rng=st.randoms(use_true_random=False),
    state=STATES,
    cuts=st.lists(st.integers(0, 400), max_size=30),
)
def test_fuzzed_stream_in_random_pieces_breaks_nothing(
    rng: random.Random, state: str, cuts: list[int]
) -> None:
    """Fuzzed octets in arbitrary pieces (CR and LF apart): no SERVERBUG, nothing logged."""
    with scratch() as directory, watching_log() as log:
        client = open_client(directory, state)
        fuzzer = CommandFuzzer(rng, big=2_000)
        stream = b"".join(fuzzer.command(i, state).wire for i in range(20))
        pos, output = 0, b""
        for size in [*cuts, len(stream)]:
            piece, pos = stream[pos : pos + size], pos + size
            if piece and not client.closed:
                output += client.run(FuzzCommand(b"", b"PIECE", (piece,))).output
        assert b"SERVERBUG" not in output, output[:2000]
        if client.keystore is not None:
            client.keystore.close()
        gc.collect()
    assert not log.problems(), log.problems()

"""Fuzzing XKEY: hostile arguments get BAD or NO with an XKEY code, never an internal error.

:func:`transcoder.imap.xkey_syntax.parse_arguments` is fed XKEY arguments
built from its grammar and mutated, and raw octets: it returns a request of
the right shape or raises one of our client errors.  The same commands then
run through the server against a real keystore (real certificate
validation), mixed with a genuine certificate and its fingerprint so LIST,
DELETE and POLICY have something to act on: each gets one tagged answer and
no ``SERVERBUG``, and the keystore only ever holds the genuine key.
"""

from __future__ import annotations

import contextlib
import random
import re

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from tests.keys.certs import ALICE, NOW, der, make_cert
from tests.security.fuzzing import scaled, scratch, watching_log
from tests.security.imap_grammar import CommandFuzzer, FuzzCommand, frame
from tests.security.protocol_fuzz import FUZZ_BIG, answer_problems, open_client
from tests.security.tokens import Part
from transcoder.errors import ClientError
from transcoder.imap.xkey_syntax import (
    DeleteKey,
    KeyLiteralAhead,
    PutKey,
    SetPolicy,
    parse_arguments,
)

_FINGERPRINT = re.compile(r"[0-9a-f]{1,128}")
_ENDS_WITH_LITERAL = re.compile(rb"\{\d{1,20}\+?\}\Z")
#: One genuine certificate for alice, and its fingerprint as XKEY LIST shows it.
CERTIFICATE = der(make_cert(ec.generate_private_key(ec.SECP256R1()), sans=(ALICE,)))


def arguments_line(parts: list[Part]) -> bytes:
    """What ``arg_xkey`` receives for ``parts``: the line up to a first synchronizing literal."""
    first = frame(b"", parts)[0] or b""
    return first[:-2]  # the CRLF that ends the line (after "{n}" when a literal follows)


def check_request(line: bytes) -> None:
    """Parse ``line``; only a ClientError may escape, and a request must have its shape."""
    with contextlib.suppress(ClientError):
        request = parse_arguments(line)
        if isinstance(request, KeyLiteralAhead):
            assert _ENDS_WITH_LITERAL.search(line.rstrip(b" ")), line
        elif isinstance(request, DeleteKey):
            assert _FINGERPRINT.fullmatch(request.fingerprint), request
        elif isinstance(request, SetPolicy):
            assert (request.mode is None) != (request.format is None), request
        elif isinstance(request, PutKey):
            assert len(request.material) <= len(line), request


@scaled(300)
@given(rng=st.randoms(use_true_random=False))
def test_grammar_fuzzed_arguments_parse_or_raise_client_errors(rng: random.Random) -> None:
    """XKEY arguments from the grammar, mutated: a well-shaped request or a ClientError."""
    fuzzer = CommandFuzzer(rng, big=2_000)
    check_request(arguments_line(fuzzer.t.mutate(fuzzer.xkey_arguments(CERTIFICATE, b"ab"))))


@scaled(300)
@given(data=st.binary(max_size=200))
def test_random_octets_parse_or_raise_client_errors(data: bytes) -> None:
    """Arbitrary octets as XKEY arguments: a well-shaped request or a ClientError."""
    check_request(data)


@scaled(300)
@given(word=st.sampled_from([b"PUT", b"DELETE", b"POLICY MODE", b"POLICY FORMAT"]), rest=st.text())
def test_any_text_after_a_keyword_parses_or_raises_client_errors(word: bytes, rest: str) -> None:
    """Any Unicode after a keyword (case folding that changes length, surrogates): no crash."""
    check_request(word + b" " + rest.encode("utf-8", "surrogatepass"))


def xkey_command(fuzzer: CommandFuzzer, index: int, fingerprint: bytes) -> FuzzCommand:
    """A fuzzed XKEY command, tagged ``x<index>``."""
    tag = b"x%d" % index
    keyword, *arguments = fuzzer.xkey_arguments(CERTIFICATE, fingerprint)
    parts = [keyword, *fuzzer.t.mutate(arguments)]  # mostly a known keyword, to get past it
    return FuzzCommand(tag, b"XKEY", frame(tag + b" XKEY", parts))


@scaled(30)
@given(rng=st.randoms(use_true_random=False), count=st.integers(1, 15))
def test_fuzzed_xkey_over_the_wire_answered_cleanly(rng: random.Random, count: int) -> None:
    """Fuzzed XKEY commands on a real keystore: one tagged answer each, no SERVERBUG."""
    with scratch() as directory, watching_log() as log:
        client = open_client(directory, "auth")
        assert client.keystore is not None
        fuzzer = CommandFuzzer(rng, big=FUZZ_BIG)
        fingerprint = b""
        for index in range(count):
            outcome = client.run(xkey_command(fuzzer, index, fingerprint))
            problems = answer_problems(outcome)
            assert not problems, (problems, outcome.command.wire[:300], outcome.output[:300])
            found = re.search(rb'FINGERPRINT "([0-9a-f]+)"', outcome.output)
            fingerprint = found.group(1) if found else fingerprint
        stored = client.keystore.list_keys(ALICE, NOW)
        assert {bytes(k.material) for k in stored} <= {CERTIFICATE}
        client.keystore.close()
        assert client.noop_works()
    assert not log.problems(), log.problems()

"""SEARCH and UID SEARCH (RFC 3501 sections 6.4.4 and 6.4.8) on the store's search evaluator.

Twisted's SEARCH parses the criteria into nested lists that cannot hold a
literal, compares ``str`` with ``bytes`` in its header keys (FROM, TO, CC,
SUBJECT and HEADER fail), ignores CHARSET and answers an empty result with a
trailing space.  This mixin replaces it:

* :meth:`SearchMixin.arg_search_criteria` collects the arguments exactly as
  they travel.  When a line ends by announcing a literal (``{n}``), it asks
  Twisted's own literal machinery for it (``_stringLiteral``: continuation
  request, ``LiteralString``, ``parse_pending``), then goes on with the rest
  of the command line;
* :func:`~transcoder.store.search.parse_search_arguments` turns them into a
  query before the store is touched: invalid criteria get
  ``BAD [CLIENTBUG]``, an unsupported charset ``NO [BADCHARSET (...)]``;
* :class:`~transcoder.store.search.SearchRun` evaluates the query in small
  steps.  The first :data:`SYNC_STEPS` run at once (a small mailbox is
  answered without delay); the rest run on a Cooperator scheduled on the
  injected clock, so a search over many or large messages never holds the
  reactor for long.  Messages above ``THREAD_PARSE_LIMIT`` get their MIME
  tree parsed in a worker thread, as FETCH does.  Commands pipelined behind
  a running SEARCH wait for its answer (RFC 3501 section 5.5,
  :mod:`.command_order`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task, threads
from twisted.mail import imap4
from twisted.python.failure import Failure

from transcoder.errors import ClientError, LiteralTooLarge
from transcoder.imap.fetch import THREAD_PARSE_LIMIT
from transcoder.store.search import SearchRun, parse_search_arguments, pending_literal

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

#: Largest literal accepted inside SEARCH criteria (a search string, not a message).
SEARCH_LITERAL_LIMIT = 64 * 1024
#: Largest SEARCH argument string, literals included.
SEARCH_CRITERIA_LIMIT = 256 * 1024
#: Evaluation steps (one message, or one body chunk) run before the first reactor turn.
SYNC_STEPS = 64
_DONE = object()


def _ignore_vanished(failure: Failure) -> None:
    """Errback: a message expunged by another session meanwhile simply does not match."""
    failure.trap(FileNotFoundError)


class SearchMixin(_ServerBase):
    """SEARCH / UID SEARCH for TranscodingIMAP4Server."""

    _search_task: task.CooperativeTask | None = None
    _search_cooperator: task.Cooperator | None = None

    # -- collecting the arguments ------------------------------------------------

    def arg_search_criteria(self, line: bytes | None) -> Any:
        """The whole SEARCH argument string, literals inlined in wire form.

        Returns ``(criteria bytes, b"")`` -- or a Deferred of it while a
        literal is awaited.  A refusal found here (a literal over the cap,
        input that can never parse) is returned as the value, a
        :class:`ClientError` that :meth:`do_SEARCH` answers, so the answer
        is the same whether it comes before or after a literal.
        """
        return self._collect_criteria(line or b"")

    def _collect_criteria(self, data: bytes) -> Any:
        try:
            size = pending_literal(data)
        except ClientError as error:
            return error, b""
        if size is None:
            return data, b""
        limit = min(SEARCH_LITERAL_LIMIT, self.settings.max_astring_literal_size)
        too_large = LiteralTooLarge(f"Search literals are limited to {limit} octets")
        # Refused before a single octet is read: the client waits for "+".
        if size > limit or len(data) + size > SEARCH_CRITERIA_LIMIT:
            return too_large, b""
        try:
            literal: defer.Deferred[tuple[bytes, bytes]] = self._stringLiteral(size)
        except ClientError as error:  # the wire mixin's own refusal
            return error, b""
        except imap4.IllegalClientResponse:  # stock Twisted's cap on string literals
            return too_large, b""
        # The literal's octets and the rest of its command line.
        return literal.addCallback(
            lambda result: self._collect_criteria(data + b"\r\n" + result[0] + result[1])
        )

    # -- the command ---------------------------------------------------------------

    def do_SEARCH(self, tag: bytes, criteria: bytes | ClientError, uid: int = 0) -> None:
        """SEARCH / UID SEARCH: ``* SEARCH n ...`` then a tagged OK."""
        if isinstance(criteria, ClientError):
            self.send_error(tag, criteria)
            return
        try:
            query = parse_search_arguments(criteria)
        except ClientError as error:
            self.send_error(tag, error)
            return
        try:
            run = SearchRun(self.mbox, query)
        except Exception:
            self.send_error(tag, Failure())  # logged, answered NO [SERVERBUG]
            return
        self._run_search(tag, run, bool(uid))

    select_SEARCH = (do_SEARCH, arg_search_criteria)

    # -- running the evaluation ------------------------------------------------------

    def _search_steps(self, run: SearchRun) -> Iterator[defer.Deferred[Any] | None]:
        """``run``'s steps, with large messages' MIME trees parsed off the reactor thread."""
        for seq, message in run.messages:
            if run.query.reads_messages and message.size > THREAD_PARSE_LIMIT:
                yield threads.deferToThread(message.entity).addErrback(_ignore_vanished)
            yield from run.check(run.candidate(seq, message))
            yield None

    def _run_search(self, tag: bytes, run: SearchRun, uid: bool) -> None:
        """Evaluate ``run``: a bounded number of steps now, the rest cooperatively."""
        steps = self._search_steps(run)
        try:
            for _ in range(SYNC_STEPS):
                step = next(steps, _DONE)
                if step is _DONE:
                    self._answer_search(tag, run, uid)
                    return
                if isinstance(step, defer.Deferred):
                    steps = itertools.chain([step], steps)  # the Cooperator waits for it
                    break
        except Exception:
            self._search_failed(Failure(), tag)
            return
        self._search_task = self._cooperator().cooperate(steps)
        done = self._search_task.whenDone()
        done.addBoth(self._search_finished)  # before the answer, which lets the next one run
        done.addCallbacks(
            lambda _: self._answer_search(tag, run, uid),
            self._search_failed,
            errbackArgs=(tag,),
        )

    def _cooperator(self) -> task.Cooperator:
        """A Cooperator ticking on the server's injected clock."""
        if self._search_cooperator is None:
            clock = self.clock
            self._search_cooperator = task.Cooperator(
                scheduler=lambda work: clock.callLater(0, work)
            )
        return self._search_cooperator

    def _answer_search(self, tag: bytes, run: SearchRun, uid: bool) -> None:
        numbers = run.uids if uid else run.sequence_numbers
        # RFC 3501 section 7.2.5: "SEARCH" then one SP before each number, none when empty.
        self.sendUntaggedResponse(b"SEARCH" + b"".join(b" %d" % n for n in numbers))
        self.sendPositiveResponse(tag, b"UID SEARCH completed" if uid else b"SEARCH completed")

    def _search_failed(self, failure: Failure, tag: bytes) -> None:
        if failure.check(task.TaskStopped):
            return  # the connection went away
        self.send_error(tag, failure)  # logged, answered NO [SERVERBUG]

    def _search_finished(self, result: object) -> object:
        self._search_task = None
        return result

    def connectionLost(self, reason: Any) -> None:
        """Stop a search still running for a client that has gone."""
        running, self._search_task = self._search_task, None
        if running is not None:
            running.stop()
        super().connectionLost(reason)

"""Local clusters on loopback: PostgreSQL, HAProxy and fronts started and stopped by PID.

The parts of issue 14's scale-out setup, each a real program run
unprivileged in a directory of its own: :mod:`.postgres` (``initdb`` and
``postgres``), :mod:`.haproxy` (``haproxy -db`` in ``mode tcp`` with
``send-proxy-v2`` and health checks), :mod:`.fronts` (``twistd -n
transcoder`` listening on ``haproxy:`` endpoints), each stopped by
:func:`.process.stop_process`, with
:mod:`transcoder.backend.dovecot` for the mail.  The tests
(``tests/cluster/``, ``tests/postgres.py``), ``benchmarks/cluster.py`` and
``examples/cluster/run.py`` share them.  Not imported by the server; no
Twisted import.
"""

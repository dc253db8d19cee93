"""The front before an existing IMAP server (issue 11): the store interfaces spoken over IMAP.

Phase 1 (docs/design.md, "Backend front"): a backend connection per client
session (:mod:`.connection`), logins checked by the backend (:mod:`.auth`),
and the read path -- LIST, SELECT/EXAMINE, STATUS, FETCH -- served through the
whole IMAP layer (:mod:`.account`, :mod:`.mailbox`).  :mod:`.dovecot` runs a
real Dovecot for the tests and benchmarks.
"""

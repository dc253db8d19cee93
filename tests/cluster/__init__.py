"""Several fronts behind a real HAProxy, one PostgreSQL keystore, one Dovecot (issue 14, part 2)."""

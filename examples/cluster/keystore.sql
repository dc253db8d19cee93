-- The shared keystore's database (psql -U postgres -f keystore.sql on the PostgreSQL host).
-- The first front to start creates the schema; the fronts need no other rights.
CREATE ROLE transcoder LOGIN;  -- then: \password transcoder, and ~transcoder/.pgpass on fronts
CREATE DATABASE transcoder OWNER transcoder;
-- pg_hba.conf: host transcoder transcoder 10.0.0.0/24 scram-sha-256

"""Operator tools: `potluck ops replay`, `events tail|show`, `status` and `trace`.

- replay.py   rebuild every read model from the log; the pool at a past
              position or time; compare with the live services (`--check`)
- events.py   follow the log live, or show one stream's history
- status.py   one screen: hosts, capacity, allocations by state, relay lag,
              events this version cannot decode (and, with --live, how many
              the running services skipped)
- trace.py    the trace id an allocation was requested under
- live.py     asking the running registry and allocator for their read models
              (digests, then the rows that differ; and the events they skipped)
- hollow.py   `ops hollow --hosts N`: hollow hosts (in-memory engine) for scale tests only
- archive.py  `ops archive`: old events moved to events_archive (replay still reads them)
- backup.py   `ops backup` / `ops restore`: the log's database to a file and back (pg_dump, pg_restore)
- cli.py      the click commands, attached under `potluck ops`

Every command reads the log directly (`--database-url`); only `replay
--check` and `status --live` also ask the running services, over NATS. Bad
input (an unknown stream or allocation, a position past the end, a malformed
time) is an `OpsError`: one line on stderr and a non-zero exit.
"""


class OpsError(Exception):
    """A clear, one-line reason an ops command cannot do what was asked (exit status 1)."""

    exit_code = 1


class LiveUnavailable(OpsError):
    """A running service did not answer (exit status 2: the check could not be made)."""

    exit_code = 2


__all__ = ["LiveUnavailable", "OpsError"]

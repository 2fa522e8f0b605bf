"""Versioned schema migrations, one ordered list per backend (their SQL dialects differ).

Rules: never edit a released migration, append a new version instead; both lists carry
the same versions so either backend reaches the same schema. ``open()`` records each applied
version in ``schema_migrations`` inside the migration's own transaction, so a migration that
fails leaves no trace and is retried on the next start.

Notes on the schema:
- Event-shaped columns (``event``, ``value``, ``profile``) hold ``json.dumps`` text. PostgreSQL
  uses TEXT rather than JSONB on purpose: JSONB rejects ``\\u0000``, which a user can type, and
  one such message would fail a whole group-committed inbox batch.
- ``seq`` is never reused (AUTOINCREMENT, BIGSERIAL): readers page with ``after_seq`` and a
  reused number could slip behind a cursor after the newest row was deleted.
- ``conversations.thread_id`` is '' for channels without threads, so it can be in the key.
- Times are integer milliseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


SCHEMA_MIGRATIONS_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
}


def _initial_schema(*, serial: str, integer: str) -> tuple[str, ...]:
    """Version 1 for both dialects: they differ only in the key and integer types."""
    return (
        f"""CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at {integer} NOT NULL,
            PRIMARY KEY (namespace, key))""",
        f"""CREATE TABLE users (
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            user_id TEXT NOT NULL,
            profile TEXT,
            created_at {integer} NOT NULL,
            updated_at {integer} NOT NULL,
            PRIMARY KEY (bot_id, channel, user_id))""",
        # user before thread in the key: erase_user deletes by (bot, channel, user).
        f"""CREATE TABLE conversations (
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            user_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            created_at {integer} NOT NULL,
            last_event_at {integer} NOT NULL,
            PRIMARY KEY (bot_id, channel, user_id, thread_id))""",
        # event_id is unique so recording the same event twice (a replay after a crash) is a no-op.
        f"""CREATE TABLE messages (
            seq {serial},
            event_id TEXT NOT NULL UNIQUE,
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread_id TEXT,
            user_id TEXT NOT NULL,
            direction TEXT NOT NULL,
            type TEXT NOT NULL,
            event TEXT NOT NULL,
            preview TEXT NOT NULL,
            channel_message_id TEXT,
            created_at {integer} NOT NULL)""",
        "CREATE INDEX messages_by_user ON messages (bot_id, channel, user_id, seq)",
        "CREATE INDEX messages_by_age ON messages (created_at)",
        f"""CREATE TABLE inbox (
            seq {serial},
            event_id TEXT NOT NULL UNIQUE,
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread_id TEXT,
            user_id TEXT NOT NULL,
            dedupe_key TEXT,
            event TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'done', 'dropped', 'error')),
            error TEXT,
            created_at {integer} NOT NULL,
            processed_at {integer})""",
        # Partial indexes work the same on SQLite and PostgreSQL.
        "CREATE UNIQUE INDEX inbox_dedupe ON inbox (bot_id, channel, dedupe_key) WHERE dedupe_key IS NOT NULL",
        "CREATE INDEX inbox_pending ON inbox (seq) WHERE status = 'pending'",
        "CREATE INDEX inbox_processed ON inbox (processed_at) WHERE status <> 'pending'",
        "CREATE INDEX inbox_by_user ON inbox (bot_id, channel, user_id)",
        f"""CREATE TABLE outbox (
            seq {serial},
            event_id TEXT NOT NULL UNIQUE,
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread_id TEXT,
            user_id TEXT NOT NULL,
            event TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at {integer} NOT NULL DEFAULT 0,
            error TEXT,
            channel_message_id TEXT,
            created_at {integer} NOT NULL,
            updated_at {integer} NOT NULL)""",
        "CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending'",
        "CREATE INDEX outbox_finished ON outbox (updated_at) WHERE status <> 'pending'",
        "CREATE INDEX outbox_by_user ON outbox (bot_id, channel, user_id)",
    )


def _contacts(*, integer: str) -> tuple[str, ...]:
    """Version 2: one contact linking a person's user ids across bots and channels (e.g. the
    PSIDs one person has on several Facebook Pages)."""
    return (
        f"""CREATE TABLE contacts (
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            user_id TEXT NOT NULL,
            contact_id TEXT NOT NULL,
            created_at {integer} NOT NULL,
            PRIMARY KEY (bot_id, channel, user_id))""",
        "CREATE INDEX contacts_by_contact ON contacts (contact_id)",
    )


# Version 3: pending events are read per bot (the pipeline leaves a bot's events in storage
# while it is unmounted or while memory is full, and reads them back in order when it can take
# them). Same cost per write as the index it replaces, which only ordered pending rows overall.
_PENDING_BY_BOT = (
    "DROP INDEX inbox_pending",
    "CREATE INDEX inbox_pending_by_bot ON inbox (bot_id, seq) WHERE status = 'pending'",
)

# Version 4: no per-user index on the two queue tables. Their rows arrive in user order, which
# is random: each such index dirties one more page per row and commit (bench/sqlite_costs.py:
# about a third of a stored event's SQLite time), while the only reader is a user erase, which
# is rare and now scans the queues in small slices instead (they hold days, not months).
_NO_QUEUE_USER_INDEXES = (
    "DROP INDEX inbox_by_user",
    "DROP INDEX outbox_by_user",
)

# Version 5: failed events (a dead-letter state). Incoming events that could not be processed
# after their retries end ``failed`` (with how many attempts they had and the last error, also
# kept while they are still retried), and an operator may ``discard`` a failed event; outgoing
# ones gain ``dropped`` (stopped by a middleware, no longer mixed up with failed sends) and
# ``discarded``. Failed rows are listed per bot, hence their small partial indexes.
_INBOX_STATUSES_V5 = "('pending', 'done', 'dropped', 'error', 'failed', 'discarded')"
_OUTBOX_STATUSES_V5 = "('pending', 'sent', 'failed', 'dropped', 'discarded')"
_FAILED_INDEXES = (
    "CREATE INDEX inbox_failed ON inbox (bot_id, seq) WHERE status = 'failed'",
    "CREATE INDEX outbox_failed ON outbox (bot_id, seq) WHERE status = 'failed'",
)

_INBOX_COLUMNS_V4 = ("seq, event_id, bot_id, channel, thread_id, user_id, dedupe_key, event, status, error, "
                     "created_at, processed_at")
_OUTBOX_COLUMNS_V4 = ("seq, event_id, bot_id, channel, thread_id, user_id, event, status, attempts, "
                      "next_attempt_at, error, channel_message_id, created_at, updated_at")


def _sqlite_rebuilt(table: str, create: str, columns: str, indexes: tuple[str, ...]) -> tuple[str, ...]:
    """SQLite cannot change a CHECK constraint: build the new table, copy, swap, re-index.

    The AUTOINCREMENT counter is carried over first, so a seq once handed out (even of a row
    since purged) is never handed out again.
    """
    new = f"{table}_v5"
    return (
        create.replace(f"CREATE TABLE {table} (", f"CREATE TABLE {new} (", 1),
        f"INSERT INTO sqlite_sequence (name, seq) SELECT '{new}', seq FROM sqlite_sequence WHERE name = '{table}'",
        f"INSERT INTO {new} ({columns}) SELECT {columns} FROM {table}",
        f"DROP TABLE {table}",
        f"ALTER TABLE {new} RENAME TO {table}",
        *indexes,
    )


_SQLITE_FAILED_EVENTS = (
    *_sqlite_rebuilt("inbox", f"""CREATE TABLE inbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread_id TEXT,
            user_id TEXT NOT NULL,
            dedupe_key TEXT,
            event TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_INBOX_STATUSES_V5}),
            error TEXT,
            created_at INTEGER NOT NULL,
            processed_at INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0)""", _INBOX_COLUMNS_V4, (
        "CREATE UNIQUE INDEX inbox_dedupe ON inbox (bot_id, channel, dedupe_key) WHERE dedupe_key IS NOT NULL",
        "CREATE INDEX inbox_pending_by_bot ON inbox (bot_id, seq) WHERE status = 'pending'",
        "CREATE INDEX inbox_processed ON inbox (processed_at) WHERE status <> 'pending'",
    )),
    *_sqlite_rebuilt("outbox", f"""CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread_id TEXT,
            user_id TEXT NOT NULL,
            event TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_OUTBOX_STATUSES_V5}),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            channel_message_id TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL)""", _OUTBOX_COLUMNS_V4, (
        "CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending'",
        "CREATE INDEX outbox_finished ON outbox (updated_at) WHERE status <> 'pending'",
    )),
    *_FAILED_INDEXES,
)

_POSTGRES_FAILED_EVENTS = (
    "ALTER TABLE inbox DROP CONSTRAINT inbox_status_check",
    f"ALTER TABLE inbox ADD CONSTRAINT inbox_status_check CHECK (status IN {_INBOX_STATUSES_V5})",
    "ALTER TABLE inbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE outbox DROP CONSTRAINT outbox_status_check",
    f"ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN {_OUTBOX_STATUSES_V5})",
    *_FAILED_INDEXES,
)


def _media(*, integer: str, blob: str) -> tuple[str, ...]:
    """Version 6: media users sent (and modules keep), as blobs in the same storage, so that every
    node of a cluster reads them and an erase or the purge deletes them with the rest. ``media_id``
    is 128 random bits: it is what makes a media URL unguessable."""
    return (
        f"""CREATE TABLE media (
            media_id TEXT PRIMARY KEY,
            bot_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            user_id TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size {integer} NOT NULL,
            filename TEXT,
            data {blob} NOT NULL,
            created_at {integer} NOT NULL)""",
        "CREATE INDEX media_by_user ON media (bot_id, channel, user_id)",
        "CREATE INDEX media_by_age ON media (created_at)",
    )


# Version 7: cluster mode (PostgreSQL only; docs/cluster.md). Each conversation belongs to one of
# CLUSTER_PARTITIONS partitions, computed by the database from the conversation's key (the same
# md5 as ``partition_of`` in storage/postgres_cluster.py, so that a node can tell an event's partition
# without asking); each partition is leased to one live node (owner, epoch: the epoch grows at every
# change of owner, and completions are fenced by it). Nodes register and heartbeat in cluster_nodes.
CLUSTER_PARTITIONS = 64
_PARTITION_OF = ("(get_byte(decode(md5(bot_id || chr(31) || channel || chr(31) || COALESCE(thread_id, '') || chr(31)"
                 f" || user_id), 'hex'), 0) % {CLUSTER_PARTITIONS})")
_POSTGRES_CLUSTER = (
    f"ALTER TABLE inbox ADD COLUMN part SMALLINT GENERATED ALWAYS AS {_PARTITION_OF} STORED",
    f"ALTER TABLE outbox ADD COLUMN part SMALLINT GENERATED ALWAYS AS {_PARTITION_OF} STORED",
    "CREATE INDEX inbox_pending_by_part ON inbox (part, seq) WHERE status = 'pending'",
    "CREATE INDEX outbox_pending_by_part ON outbox (part, seq) WHERE status = 'pending'",
    """CREATE TABLE cluster_nodes (
            node_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            port INTEGER,
            started_at BIGINT NOT NULL,
            heartbeat_at BIGINT NOT NULL,
            state TEXT NOT NULL DEFAULT 'live',
            bots TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE cluster_partitions (
            part SMALLINT PRIMARY KEY,
            owner TEXT,
            epoch BIGINT NOT NULL DEFAULT 0,
            since BIGINT)""",
    f"INSERT INTO cluster_partitions (part) SELECT generate_series(0, {CLUSTER_PARTITIONS - 1})",
)

SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial_schema(serial="INTEGER PRIMARY KEY AUTOINCREMENT", integer="INTEGER")),
    Migration(2, "contacts", _contacts(integer="INTEGER")),
    Migration(3, "pending events by bot", _PENDING_BY_BOT),
    Migration(4, "no per-user index on the queues", _NO_QUEUE_USER_INDEXES),
    Migration(5, "failed events", _SQLITE_FAILED_EVENTS),
    Migration(6, "media", _media(integer="INTEGER", blob="BLOB")),
    # Cluster mode needs PostgreSQL (a start in cluster mode on SQLite is refused): nothing to add here.
    Migration(7, "cluster (PostgreSQL only)", ()),
)

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial_schema(serial="BIGSERIAL PRIMARY KEY", integer="BIGINT")),
    Migration(2, "contacts", _contacts(integer="BIGINT")),
    Migration(3, "pending events by bot", _PENDING_BY_BOT),
    Migration(4, "no per-user index on the queues", _NO_QUEUE_USER_INDEXES),
    Migration(5, "failed events", _POSTGRES_FAILED_EVENTS),
    Migration(6, "media", _media(integer="BIGINT", blob="BYTEA")),
    Migration(7, "cluster", _POSTGRES_CLUSTER),
)

LATEST_VERSION = SQLITE_MIGRATIONS[-1].version


def missing_migrations(migrations: tuple[Migration, ...], current: int) -> list[Migration]:
    """The migrations to apply, in order, to a database at version ``current``.

    Refuses a database newer than this code: running old code on it could corrupt data
    the newer schema depends on.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, got {versions}")
    if current > len(migrations):
        raise RuntimeError(
            f"the database schema is at version {current} but this botpress-py knows versions up to "
            f"{len(migrations)}: upgrade botpress-py or point it at another database"
        )
    return list(migrations[current:])

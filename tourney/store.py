"""The one SQLite store under both caches: WAL mode, a meta table naming the file's kind and schema, serialized calls.

A store file records its ``kind`` ("judgments" or "samples") and schema ``version`` in ``tourney_meta``. Opening a
file of the other kind, of another version, or one that is not a tourney store is refused with one InputError line
naming the file, and the file is left untouched. Files written before the meta table existed are recognised by their
tables (and, for judgments, ``PRAGMA user_version``) and get their meta rows on first open.

WAL mode and short transactions let several processes share one file. The connection may be used from any thread
(the engine calls the cache from a worker thread); a lock serializes the calls of one process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tourney.errors import InputError

# Kinds of store, and how a user names them in a message.
KINDS = {"judgments": "judgment cache", "samples": "sample cache"}
_META = "CREATE TABLE IF NOT EXISTS tourney_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's bound on host parameters


@dataclass(frozen=True)
class Schema:
    """What a store of one kind holds: its ``kind``, schema ``version`` (bump when a table changes) and tables."""

    kind: str
    version: int
    tables: str  # CREATE TABLE IF NOT EXISTS statements, separated by ";"


def connect_wal(path: str) -> sqlite3.Connection:
    """Connect with a 60 s busy wait and switch to WAL (so readers and one writer of several processes coexist).

    Switching a new file to WAL takes a lock SQLite's busy wait does not cover: a second process opening the same new
    file at that moment sees "database is locked". That is tried again for up to 60 s.
    """
    deadline = time.monotonic() + 60
    while True:
        db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        except sqlite3.OperationalError as err:
            db.close()
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    """One SQLite file of one kind; every method holds the store's lock, so threads take turns.

    The caches subclass it; their main table is named after their kind, and ``count()`` counts its rows.
    """

    def __init__(self, path: str | os.PathLike[str], schema: Schema) -> None:
        """Open (or create) the file and check its kind and version; InputError (naming the file) when it is refused."""
        self.path, self.schema = str(path), schema
        self._lock = threading.Lock()
        try:
            if not os.path.exists(self.path):
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create the cache's folder: {err.strerror}", file=self.path) from None
        try:
            self.db = connect_wal(self.path)
        except sqlite3.DatabaseError as err:
            raise InputError(f"cannot open the {KINDS[schema.kind]}: {err}", file=self.path) from None
        try:
            self._check()
        except BaseException as err:
            self.db.close()
            if isinstance(err, sqlite3.DatabaseError):
                raise InputError(f"cannot open the {KINDS[schema.kind]}: {err}", file=self.path) from None
            raise

    def _check(self) -> None:
        """Refuse a file of another kind or version; create the tables (and meta rows) of a new or older file."""
        want = self.schema
        with self.transaction() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            kind, version = _identify(db, tables)
            if tables and kind is None:
                raise InputError("not a tourney cache; use another --cache", file=self.path)
            if kind is not None and kind != want.kind:
                raise InputError(f"this is a {KINDS.get(kind, kind)}, not a {KINDS[want.kind]}; use another --cache",
                                 file=self.path)  # fmt: skip
            if kind is not None and version != want.version:
                raise InputError(f"{KINDS[want.kind]} schema {version}, this tourney writes {want.version}; use "
                                 f"another --cache", file=self.path)  # fmt: skip
            for statement in [_META, *want.tables.split(";")]:
                db.execute(statement)
            db.executemany("INSERT OR IGNORE INTO tourney_meta VALUES (?, ?)",
                           [("kind", want.kind), ("version", str(want.version))])  # fmt: skip
            db.execute(f"PRAGMA user_version={want.version}")  # what tourney before the meta table checked

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and an immediate (write) transaction: commit on success, roll back on error."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def select_in(self, query: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        """Rows of ``query`` (whose ``{marks}`` stands for the placeholders of ``key IN (...)``) over all ``keys``."""
        rows: list[tuple[Any, ...]] = []
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                rows += self.db.execute(query.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def insert(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Commit rows into ``table`` in one transaction; a key already stored keeps its first row."""
        if rows:
            marks = ",".join("?" * len(rows[0]))
            with self.transaction() as db:
                db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", rows)

    def count(self, table: str | None = None) -> int:
        """Number of rows in ``table``, by default the main one (named after the store's kind)."""
        with self._lock:
            return self.db.execute(f"SELECT COUNT(*) FROM {table or self.schema.kind}").fetchone()[0]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.db.close()


def _identify(db: sqlite3.Connection, tables: set[str]) -> tuple[str | None, int | None]:
    """The (kind, version) a file says it is, or (None, None) for an empty or foreign file.

    A file from before the meta table is known by its main table; its version is ``PRAGMA user_version`` (tourney set
    it for judgments from the start; sample files left it 0, which counts as version 1).
    """
    if "tourney_meta" in tables:
        meta = dict(db.execute("SELECT key, value FROM tourney_meta"))
        if meta.get("kind") in KINDS and str(meta.get("version", "")).isdigit():
            return meta["kind"], int(meta["version"])
        return None, None
    for kind in KINDS:
        if kind in tables:  # the main table is named after the kind
            return kind, db.execute("PRAGMA user_version").fetchone()[0] or 1
    return None, None

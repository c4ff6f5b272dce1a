"""The judgment cache: one SQLite file, every judgment committed before the engine uses it.

Key = SHA-256 over the judge's identity (model, family, template text, sampling), the prompt, the two texts *in
the order shown* and the vote index. So a killed run resumes with nothing redone, a re-run makes no new requests,
and a judge with other settings never reuses another's verdicts. WAL mode and short transactions let two processes
share one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tourney.errors import InputError
from tourney.types import Judgment, Request

SCHEMA_VERSION = 2  # bump when the table changes: an older file is refused, never rewritten
_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY, judge TEXT NOT NULL, verdict TEXT, p_a REAL, raw TEXT NOT NULL,
    finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    forced INTEGER NOT NULL,
    -- what was judged, in the order shown: SHA-256 of the prompt and of the texts in positions A and B
    prompt_sha TEXT NOT NULL, a_sha TEXT NOT NULL, b_sha TEXT NOT NULL, vote INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS judges (hash TEXT PRIMARY KEY, identity TEXT NOT NULL);
"""


def cache_dir() -> Path:
    """Return tourney's cache folder: $TOURNEY_CACHE_DIR, else $XDG_CACHE_HOME/tourney, else ~/.cache/tourney."""
    if os.environ.get("TOURNEY_CACHE_DIR"):
        return Path(os.environ["TOURNEY_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tourney"


def default_cache_path() -> Path:
    """Return the default judgment cache file."""
    return cache_dir() / "judgments.sqlite"


def canonical(obj: Any) -> str:
    """Serialize to canonical JSON (sorted keys, no spaces) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha(text: str) -> str:
    """SHA-256 hex digest of a text."""
    return hashlib.sha256(text.encode()).hexdigest()


def judge_hash(identity: dict[str, Any]) -> str:
    """Hash a judge identity."""
    return sha(canonical(identity))


def request_key(judge: str, request: Request, fields: Sequence[str] = ()) -> str:
    """Hash one judgment's key: judge hash, prompt, text shown as A, text shown as B, vote index.

    ``fields``: response fields the judge reads besides the text (the simulator's ``quality``), keyed too.
    """
    parts: list[Any] = [judge, request.prompt, request.a, request.b, request.vote]
    if fields:
        parts += [[request.a_fields.get(f) for f in fields], [request.b_fields.get(f) for f in fields]]
    return sha(canonical(parts))


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


def open_cache(path: str | None, disabled: bool) -> Cache | None:
    """Open the judgment cache at ``path`` (or the default), or return None when disabled."""
    if disabled:
        return None
    return Cache(path or default_cache_path())


class Cache:
    """A SQLite store of judgments keyed by ``request_key``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (or create) the cache file; a file that is not a tourney cache raises InputError, untouched."""
        self.path = str(path)
        try:
            if not os.path.exists(self.path):
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create the cache's folder: {err.strerror}", file=self.path) from None
        try:
            self.db = connect_wal(self.path)
            self._check_schema()
        except sqlite3.DatabaseError as err:
            raise InputError(f"cannot open cache: {err}", file=self.path) from None

    def _check_schema(self) -> None:
        """Check (or create) the tables of a tourney judgment cache."""
        with self._tx():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "judgments" not in tables:
                raise InputError("not a tourney cache; use another --cache", file=self.path)
            if tables and version != SCHEMA_VERSION:
                raise InputError(f"cache schema {version}, this tourney writes {SCHEMA_VERSION}; use another "
                                 f"--cache", file=self.path)  # fmt: skip
            for statement in _SCHEMA.split(";"):
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def register(self, identity: dict[str, Any]) -> str:
        """Store a judge identity (for inspection) and return its hash."""
        digest = judge_hash(identity)
        with self._tx():
            self.db.execute("INSERT OR IGNORE INTO judges VALUES (?, ?)", (digest, canonical(identity)))
        return digest

    def get_many(self, keys: Sequence[str]) -> dict[str, Judgment]:
        """Return the cached judgments among ``keys``."""
        found: dict[str, Judgment] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, verdict, p_a, raw, finish_reason, prompt_tokens, completion_tokens, forced "
                f"FROM judgments WHERE key IN ({marks})",
                chunk,
            )
            for key, verdict, p_a, raw, finish, pt, ct, forced in rows:
                found[key] = Judgment(verdict, p_a, raw, finish, pt, ct, bool(forced))
        return found

    def put_many(self, judge: str, items: Iterable[tuple[str, Request, Judgment]]) -> None:
        """Commit judgments with what they judged (in the order shown) in one transaction, before anyone counts them."""
        rows = [
            (k, judge, j.verdict, j.p_a, j.raw, j.finish_reason, j.prompt_tokens, j.completion_tokens, int(j.forced),
             sha(canonical(r.prompt)), sha(r.a), sha(r.b), r.vote)
            for k, r, j in items
        ]  # fmt: skip
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def count(self) -> int:
        """Number of stored judgments."""
        return self.db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def _tx(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return _Commit(self.db)


class _Commit:
    """Context manager: commit on success, roll back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

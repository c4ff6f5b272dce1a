"""The judgment cache: one SQLite file, every judgment committed before the engine uses it.

Key = SHA-256 over the judge's identity (model, family, template text, sampling), the prompt, the two texts *in
the order shown* and the vote index. So a killed run resumes with nothing redone, a re-run makes no new requests,
and a judge with other settings never reuses another's verdicts. The file is a ``tourney.store`` of kind "judgments":
WAL mode and short transactions let two processes share one file, and a sample cache is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tourney.store import Schema, Store
from tourney.types import Judgment, Request

SCHEMA_VERSION = 2  # bump when the table changes: an older file is refused, never rewritten
_TABLES = """
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY, judge TEXT NOT NULL, verdict TEXT, p_a REAL, raw TEXT NOT NULL,
    finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    forced INTEGER NOT NULL,
    -- what was judged, in the order shown: SHA-256 of the prompt and of the texts in positions A and B
    prompt_sha TEXT NOT NULL, a_sha TEXT NOT NULL, b_sha TEXT NOT NULL, vote INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS judges (hash TEXT PRIMARY KEY, identity TEXT NOT NULL)
"""
SCHEMA = Schema("judgments", SCHEMA_VERSION, _TABLES)


def cache_dir() -> Path:
    """Return tourney's cache folder: $TOURNEY_CACHE_DIR, else $XDG_CACHE_HOME/tourney, else ~/.cache/tourney."""
    if os.environ.get("TOURNEY_CACHE_DIR"):
        return Path(os.environ["TOURNEY_CACHE_DIR"]).expanduser()
    return default_cache_dir()


def default_cache_dir() -> Path:
    """The cache folder without $TOURNEY_CACHE_DIR: $XDG_CACHE_HOME/tourney, else ~/.cache/tourney."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tourney"


def default_cache_path() -> Path:
    """Return the default judgment cache file."""
    return cache_dir() / "judgments.sqlite"


def canonical(obj: Any) -> str:
    """Serialize to canonical JSON (sorted keys, no spaces) for hashing."""
    kind = type(obj)
    if kind is str:  # a response text (most calls): the encoder json.dumps would pick, without its overhead
        return _encode_string(obj)
    if kind is list:  # a response's key fields (one list per response): scalars, encoded as json.dumps does
        try:
            return "[" + ",".join([_SCALARS[type(x)](x) for x in obj]) + "]"
        except KeyError:  # a nested or unusual value: json.dumps below
            pass
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_encode_string: Callable[[str], str] = json.encoder.encode_basestring
# json.dumps's encoding of each exact scalar type (a subclass, e.g. an IntEnum, goes to json.dumps): repr for ints
# and finite floats, NaN/Infinity otherwise.
_SCALARS: dict[type, Callable[[Any], str]] = {
    str: _encode_string,
    int: int.__repr__,
    float: lambda x: float.__repr__(x) if math.isfinite(x) else json.dumps(x),
    bool: lambda x: "true" if x else "false",
    type(None): lambda x: "null",
}


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
    sides = (request.a_fields, request.b_fields) if fields else ()
    extra = [canonical([side.get(f) for f in fields]) for side in sides]
    return encoded_key(canonical(judge), canonical(request.prompt), canonical(request.a), canonical(request.b),
                       request.vote, *extra)  # fmt: skip


def encoded_key(judge: str, prompt: str, a: str, b: str, vote: int, *fields: str) -> str:
    """``request_key`` from parts already in canonical JSON (the engine encodes each prompt's texts once): the
    same bytes as ``sha(canonical([judge, prompt, a, b, vote, fields_a, fields_b]))``."""
    return sha("[" + ",".join((judge, prompt, a, b, str(vote), *fields)) + "]")


def open_cache(path: str | None, disabled: bool, dry_run: bool = False) -> Cache | None:
    """Open the judgment cache at ``path`` (or the default), or return None when disabled. A ``dry_run`` only reads:
    a cache that does not exist yet is not created (None: nothing cached), and a judge is not registered."""
    if disabled:
        return None
    where = path or default_cache_path()
    if dry_run and not os.path.exists(where):
        return None
    cache = Cache(where)
    cache.reading_only = dry_run
    return cache


class Cache(Store):
    """A store of judgments keyed by ``request_key`` (see ``tourney.store``: WAL, kind and version checked)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (or create) the cache file; a file that is not a tourney judgment cache raises InputError, untouched."""
        super().__init__(path, SCHEMA)
        self.reading_only = False  # a dry run's: ``register`` stores nothing

    def register(self, identity: dict[str, Any]) -> str:
        """Store a judge identity (for inspection) and return its hash."""
        digest = judge_hash(identity)
        if not self.reading_only:
            self.insert("judges", [(digest, canonical(identity))])
        return digest

    def prompts_of(self, identity: dict[str, Any]) -> set[str]:
        """The prompts (``prompt_digest``) the judge with this identity has judgments of."""
        with self._lock:
            rows = self.db.execute("SELECT DISTINCT prompt_sha FROM judgments WHERE judge = ?", (judge_hash(identity),))
            return {digest for (digest,) in rows}

    def get_many(self, keys: Sequence[str]) -> dict[str, Judgment]:
        """Return the cached judgments among ``keys``."""
        rows = self.select_in(
            "SELECT key, verdict, p_a, raw, finish_reason, prompt_tokens, completion_tokens, forced "
            "FROM judgments WHERE key IN ({marks})",
            keys,
        )
        return {key: Judgment(verdict, p_a, raw, finish, pt, ct, bool(forced))
                for key, verdict, p_a, raw, finish, pt, ct, forced in rows}  # fmt: skip

    def put_many(self, judge: str, items: Iterable[tuple[str, Request, Judgment]]) -> None:
        """Commit judgments with what they judged (in the order shown) in one transaction, before anyone counts them."""
        digests = _Digests()  # a batch shows each prompt and text many times: hash each once
        self.insert("judgments", [
            (k, judge, j.verdict, j.p_a, j.raw, j.finish_reason, j.prompt_tokens, j.completion_tokens, int(j.forced),
             digests.prompt(r.prompt), digests.text(r.a), digests.text(r.b), r.vote)
            for k, r, j in items
        ])  # fmt: skip


def prompt_digest(prompt: Any) -> str:
    """How the cache names a prompt (its ``prompt_sha``): the SHA-256 of its canonical JSON."""
    return sha(canonical(prompt))


class _Digests:
    """``sha(canonical(prompt))`` and ``sha(text)``, each computed once per distinct prompt or text."""

    def __init__(self) -> None:
        """Start empty."""
        self._texts: dict[str, str] = {}
        self._prompts: dict[int, tuple[Any, str]] = {}  # by id(): a prompt may be a list (unhashable)

    def text(self, text: str) -> str:
        """The SHA-256 of a text."""
        digest = self._texts.get(text)
        if digest is None:
            digest = self._texts[text] = sha(text)
        return digest

    def prompt(self, prompt: Any) -> str:
        """The SHA-256 of a prompt's canonical JSON."""
        seen = self._prompts.get(id(prompt))
        if seen is None or seen[0] is not prompt:
            # Holding the prompt keeps its id from being reused by another object while this batch is written.
            seen = self._prompts[id(prompt)] = (prompt, prompt_digest(prompt))
        return seen[1]

"""JSONL in, JSONL and Parquet out: every input line validated up front, every output written atomically.

``write_all`` is tourney's one writer of whole outputs: temp file beside the target, then rename, all outputs of a
run or none. The JSONL outputs a long run streams (``tourney.sink``) follow the same rules through ``output_target``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from tourney.errors import InputError
from tourney.tables import is_table, table_lines
from tourney.types import Prompt

T = TypeVar("T")
Writer = Callable[[BinaryIO], None]  # writes one whole binary output (Parquet) to the file it is given
Payload = Iterable[str] | Writer  # what write_all writes: JSONL lines (no newlines), or a Writer


@dataclass
class Item:
    """One input line: a prompt and its candidate responses; ``row`` is the original object, kept for output."""

    id: Any
    line: int
    prompt: Prompt
    texts: list[str]
    fields: list[dict[str, Any]] = field(default_factory=list)  # per response: every field but text
    row: dict[str, Any] = field(default_factory=dict)


def read_items(path: str) -> list[Item]:
    """Read and validate a JSONL file of prompts with responses (``-`` for stdin); InputError on the first bad line."""
    return read_rows(path, parse_line)


def input_name(path: str) -> str:
    """How errors and warnings name an input: ``<stdin>`` for ``-``, else the path as given."""
    return "<stdin>" if path == "-" else path


def shown(path: str) -> str:
    """A file tourney made beside an output, named for a message: relative to the working folder when under it (the
    outputs' real paths are absolute)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def streamed(mode: int) -> bool:
    """Whether a file of this ``st_mode`` is a stream (FIFO, character device): read once, never replaced."""
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def jsonl_lines(
    path: str, start: int = 0, end: int | None = None, first_line: int = 1, name: str | None = None
) -> Iterator[tuple[str, int, str]]:
    """Yield (file name, line number, text) for each non-blank line of a JSONL file (``-`` for stdin), as UTF-8.

    Read lazily, a line at a time: an input of any size costs the memory of its longest line. ``start``/``end``: only
    the lines that begin in that byte range of a file (``start`` at a line's beginning, that line numbered
    ``first_line``); ``name``: how errors name the file."""
    name = name or input_name(path)
    if is_table(path):  # Parquet or a saved dataset: its rows as the lines they stand for (never split in ranges)
        yield from table_lines(path, name)
        return
    try:
        f = sys.stdin.buffer if path == "-" else open(path, "rb")
        if start:
            f.seek(start)
    except OSError as err:
        raise InputError(f"cannot read input: {err.strerror}", file=name) from None
    at = start
    try:
        for lineno, raw in enumerate(_read_lines(f, name), start=first_line):
            if end is not None and at >= end:
                break
            at += len(raw)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark some editors write
                raw = raw[3:]
            if lineno == 1 and raw.startswith(b"PAR1"):  # a Parquet file piped in: tables are read by their path
                raise InputError("is Parquet: give its path (only JSONL is read from a pipe)", file=name)
            if not raw or raw.isspace():  # blank (isspace: no copy of a long line)
                continue
            try:
                yield name, lineno, raw.decode("utf-8").removesuffix("\n")
            except UnicodeDecodeError as err:
                raise InputError(f"invalid UTF-8 at byte {err.start}", file=name, line=lineno) from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _read_lines(f: BinaryIO, name: str) -> Iterator[bytes]:
    """The lines of a binary file, a read error being an InputError naming it."""
    try:
        yield from f
    except OSError as err:
        raise InputError(f"cannot read input: {err.strerror}", file=name) from None


def jsonl_records(path: str) -> Iterator[tuple[str, int, Any]]:
    """Yield (file name, line number, decoded JSON value) for each non-blank line of a JSONL file."""
    for name, lineno, text in jsonl_lines(path):
        yield name, lineno, decode(text, name, lineno)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _DuplicateKey(ValueError):
    """A JSON object names one key twice (json keeps the last silently: which one the user meant is unknown)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict; _DuplicateKey names a key written twice."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        raise _DuplicateKey(next(k for k in keys if keys.count(k) > 1))
    return obj


class _Pairs(list[tuple[str, Any]]):
    """An object's pairs as written, duplicates kept."""


def _duplicate_path(text: str, key: str) -> str:
    """Where a key written twice in a JSON text is, as error fields name it (``responses[1].quality``): the first
    object (in reading order) that repeats one; ``key`` alone when the text cannot be read again that far."""

    def first(value: Any, path: str) -> str | None:
        if isinstance(value, _Pairs):
            seen: set[str] = set()
            for name, _ in value:
                if name in seen:
                    return f"{path}.{name}" if path else name
                seen.add(name)
            return next((p for name, item in value if (p := first(item, f"{path}.{name}" if path else name))), None)
        if isinstance(value, list):
            return next((p for k, item in enumerate(value) if (p := first(item, f"{path}[{k}]"))), None)
        return None

    try:
        return first(json.loads(text, object_pairs_hook=_Pairs), "") or key
    except (ValueError, RecursionError):  # malformed after the duplicate, or nested too deep
        return key


_DECODER = json.JSONDecoder(parse_constant=lambda name: _reject_constant(name), object_pairs_hook=_unique_keys)


def decode(text: str, name: str, lineno: int) -> Any:
    """Decode one JSON line strictly: malformed JSON, NaN/Infinity and lone surrogates are InputErrors."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON: {err.msg} at column {err.colno}", name, lineno) from None
    except _DuplicateKey as err:
        raise InputError("appears twice in one object", name, lineno, _duplicate_path(text, str(err))) from None
    except (ValueError, RecursionError) as err:  # NaN/Infinity, integers past Python's digit limit, deep nesting
        raise InputError(f"malformed JSON: {str(err).splitlines()[0][:120]}", name, lineno) from None
    try:
        # A lone surrogate can only come from a \uD8xx-\uDFxx escape: the full check runs only when one is written.
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "a string holds a lone surrogate escape (e.g. \\ud800), which is not text", name, lineno
        ) from None
    return value


def read_rows(path: str, parse: Callable[[str, str, int], T], limit: int | None = None) -> list[T]:
    """Read a JSONL file (``-`` for stdin) line by line with ``parse(text, file, line)`` (``limit``: its first rows
    only); ids must be unique."""
    lines = itertools.islice(jsonl_lines(path), limit)
    return unique_ids((name, lineno, parse(text, name, lineno)) for name, lineno, text in lines)


def unique_ids(rows: Iterable[tuple[str, int, T]]) -> list[T]:
    """The rows of (file name, line, row with an ``id``), in order; a repeated id is an InputError at its line. 5 and
    "5" are one id (outputs such as pairs' ``prompt_id`` write it as text), as are a row without an id on line 1 and
    an id "1"."""
    out: list[T] = []
    seen: dict[str, int] = {}
    for name, lineno, row in rows:
        key = str(row.id)  # type: ignore[attr-defined]
        if key in seen:
            shown = json.dumps(row.id)  # type: ignore[attr-defined]
            raise InputError(f"duplicate id {shown} (first on line {seen[key]})", name, lineno, "id")
        seen[key] = lineno
        out.append(row)
    return out


@dataclass
class Row:
    """One input row being validated: the checks every reader shares; each reader adds its own fields.

    Errors read ``FILE:LINE: field 'x': problem`` (InputError).
    """

    data: dict[str, Any]
    file: str
    line: int

    @classmethod
    def of(cls, value: Any, file: str, line: int) -> Row:
        """A decoded JSON value (or a Parquet row) as a Row: it must be an object."""
        if not isinstance(value, dict):
            raise InputError(f"expected a JSON object, got {type(value).__name__}", file, line)
        return cls(value, file, line)

    @classmethod
    def parse(cls, text: str, file: str, line: int) -> Row:
        """One JSONL line as a Row (see ``decode``)."""
        return cls.of(decode(text, file, line), file, line)

    def bad(self, message: str, field: str | None = None) -> InputError:
        """An InputError at this row (and ``field``)."""
        return InputError(message, self.file, self.line, field)

    def prompt(self) -> Prompt:
        """The ``prompt`` field: a string, or a non-empty list of chat messages with string role and content."""
        if "prompt" not in self.data:
            raise self.bad("missing", "prompt")
        prompt = self.data["prompt"]
        if isinstance(prompt, list):
            if not prompt:
                raise self.bad("empty message list", "prompt")
            for k, msg in enumerate(prompt):
                if not isinstance(msg, dict):
                    raise self.bad("expected an object with role and content", f"prompt[{k}]")
                for key in ("role", "content"):
                    if not isinstance(msg.get(key), str):
                        raise self.bad("expected a string", f"prompt[{k}].{key}")
        elif not isinstance(prompt, str):
            raise self.bad("expected a string or a list of chat messages", "prompt")
        return prompt

    def id(self, key: str = "id") -> str | int:
        """The ``key`` field as an id (a string or an integer; the line number when absent)."""
        ident = self.data.get(key, self.line)
        if not isinstance(ident, (str, int)) or isinstance(ident, bool):
            raise self.bad("expected a string or an integer", key)
        return ident


def parse_line(text: str, name: str, lineno: int) -> Item:
    """Validate one JSON line into an Item: a prompt with its responses (strings, or objects with text)."""
    row = Row.parse(text, name, lineno)
    prompt = row.prompt()
    if "responses" not in row.data:
        raise row.bad("missing", "responses")
    responses = row.data["responses"]
    if not isinstance(responses, list):
        raise row.bad("expected a list", "responses")
    if not responses:
        raise row.bad("empty list: need at least one response", "responses")
    texts: list[str] = []
    fields: list[dict[str, Any]] = []
    for k, resp in enumerate(responses):
        kind = type(resp)
        if kind is str:
            texts.append(resp)
            fields.append({})
        elif kind is dict:
            text = resp.get("text")
            if type(text) is not str:
                raise row.bad("expected a string", f"responses[{k}].text")
            quality, correct = resp.get("quality"), resp.get("correct")
            if quality is not None and (type(quality) not in (int, float) and not _number(quality)):
                raise row.bad("expected a number", f"responses[{k}].quality")
            if correct is not None and type(correct) is not bool:
                raise row.bad("expected true or false", f"responses[{k}].correct")
            texts.append(text)
            extra = dict(resp)
            del extra["text"]
            fields.append(extra)
        else:
            raise row.bad("expected a string or an object with text", f"responses[{k}]")
    return Item(id=row.id(), line=lineno, prompt=prompt, texts=texts, fields=fields, row=row.data)


def _number(value: Any) -> bool:
    """A JSON number (an int or float subclass, never a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; Python's parser accepts them unless told otherwise."""
    raise ValueError(f"{name} is not a JSON number")


def output_target(path: str) -> tuple[str, bool]:
    """Where writing ``path`` lands (a symlink's final target) and whether it is streamed (FIFO, character device).

    Raises InputError (naming ``path``) when it cannot be an output: a folder, a block device, a socket, a missing or
    unwritable folder.
    """
    if path == "-":
        return path, True
    try:
        st = os.stat(path)  # follows every link, /proc/self/fd's magic ones (/dev/stdout on a pipe) too
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror}", file=path) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError("is a directory, not a file", file=path)
        if streamed(st.st_mode):
            if not os.access(path, os.W_OK):
                raise InputError("cannot write: permission denied", file=path)
            # Opened by the name given: a pipe behind /dev/stdout has no path that realpath could return.
            return path, True
        if not stat.S_ISREG(st.st_mode):
            raise InputError("cannot write: not a regular file, FIFO or character device", file=path)
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        # Through a dangling symlink the missing folder is the link's target's: name it.
        link = f" ({folder}, where the link points)" if os.path.islink(path) else ""
        raise InputError(f"cannot write: no such directory{link}", file=path)
    if not os.access(folder, os.W_OK):
        raise InputError("cannot write: permission denied", file=path)
    return target, False


def _identity(path: str, target: str) -> str | None:
    """What two outputs (or one and the input) must not share: an existing file's or FIFO's inode (every name of it:
    links, hard links, /dev/stdout on a pipe or redirected to a file, ``>> INPUT``), a new file's real path, ``-`` for
    stdout on a terminal; None for a character device, which may be named twice."""
    try:
        st = os.fstat(sys.stdout.fileno()) if path == "-" else os.stat(target)
    except (OSError, ValueError):  # a new file; or no usable stdout, which cannot clash with a named output
        return "-" if path == "-" else target
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISREG(st.st_mode):
        return _inode(st)
    return "-" if path == "-" else None


def _input_identity(input_path: str) -> str | None:
    """The input's ``_identity``: what stdin reads for ``-`` (a pipe, or the file given as ``< f``; None for a
    terminal or no usable stdin), else the file's inode (its real path if it cannot be read, to fail later)."""
    try:
        st = os.fstat(sys.stdin.fileno()) if input_path == "-" else os.stat(input_path)
    except (OSError, ValueError):
        return None if input_path == "-" else os.path.realpath(input_path)
    return _inode(st) if stat.S_ISFIFO(st.st_mode) or stat.S_ISREG(st.st_mode) else None


def _inode(st: os.stat_result) -> str:
    """A file's identity whatever its name: its kind, device and inode."""
    return f"{'fifo' if stat.S_ISFIFO(st.st_mode) else 'inode'} {st.st_dev}:{st.st_ino}"


def check_outputs(
    paths: dict[str, str | None], input_path: str | None = None, cache_path: str | None = None, given: bool = True
) -> None:
    """Check every output before any work: writable, and no two (nor one and the input or the cache) naming the same
    file.

    ``paths`` maps an option name (``-o``) to its path (None: not asked for). Character devices such as /dev/null may
    be named twice; ``-`` (stdout) only once, also as /dev/stdout when stdout is a pipe. ``cache_path``: the cache the
    run uses (None: none), which no output may replace; when the user ``given`` it, its folder must exist (only the
    default cache folder is made).
    """
    seen: dict[str, str] = {}
    if input_path and (key := _input_identity(input_path)) is not None:
        seen[key] = "INPUT"
    if cache_path is not None:
        if not cache_path:
            raise InputError("--cache is an empty path")
        if given and not os.path.isdir(os.path.dirname(os.path.abspath(cache_path))):
            raise InputError("cannot create the cache: no such directory", file=cache_path)
        seen[_input_identity(cache_path) or os.path.realpath(cache_path)] = "--cache"
    for option, path in paths.items():
        if path is None:
            continue
        if not path:
            raise InputError(f"{option} is an empty path")
        key = _identity(path, output_target(path)[0])
        if key is None:
            continue
        if key in seen:
            what = f"stdout ({path})" if key == "-" else f"the same file ({'stdout' if path == '-' else path})"
            raise InputError(f"{option} and {seen[key]} name {what}")
        seen[key] = option


def dumps(row: dict[str, Any]) -> str:
    """Serialize one output row deterministically (key order kept, UTF-8 as is)."""
    return json.dumps(row, ensure_ascii=False)


def parquet(rows: Sequence[dict[str, Any]], schema: Any) -> Writer:
    """A ``write_all`` payload: ``rows`` as one Parquet table of the given Arrow ``schema``."""

    def write(out: BinaryIO) -> None:
        import pyarrow as pa  # only when Parquet is written
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), out)

    return write


def write_all(outputs: Sequence[tuple[str, Payload]]) -> None:
    """Write several outputs all or nothing, as far as files allow: the one writer of every tourney output.

    A payload is JSONL (an iterable of lines, each without its newline) or a ``Writer`` that writes the whole content
    to a binary file (``parquet``). A regular file (or a symlink's target; the link itself stays) is written to a temp
    file beside it and renamed over it once every output is written, keeping an existing file's mode (a new file gets
    the umask's). A FIFO or character device is streamed to directly and never replaced. ``-`` writes stdout, last.
    Errors name the path the user gave.
    """
    staged: list[tuple[str, str, str]] = []
    streams: list[tuple[str, str, bytes]] = []
    stdout: str | bytes | None = None
    try:
        for path, payload in outputs:
            target, streamed = output_target(path)
            if path == "-":
                stdout = _in_memory(path, payload)
            elif streamed:
                streams.append((path, target, _in_memory(path, payload)))
            else:
                staged.append((path, _stage(path, target, payload), target))
        for path, target, data in streams:
            _write_to(path, target, data)
        for path, tmp, target in staged:
            fail_as(path, os.replace, tmp, target)
    finally:
        for _, tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if isinstance(stdout, str):
        sys.stdout.write(stdout)
        sys.stdout.flush()
    elif stdout is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(stdout)
        sys.stdout.buffer.flush()


def _in_memory(path: str, payload: Payload) -> Any:
    """The whole content of a payload: text for JSONL lines, bytes from a Writer."""
    if callable(payload):
        buf = io.BytesIO()
        fail_as(path, payload, buf)
        return buf.getvalue()
    return "".join(line + "\n" for line in payload)


def _stage(path: str, target: str, payload: Payload) -> str:
    """Write a payload to a temp file beside ``target`` with the mode the final file will have; return its path."""
    fd, tmp = fail_as(path, tempfile.mkstemp, prefix=".tourney-", suffix=".tmp", dir=os.path.dirname(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) else 0o666 & ~umask()
        os.fchmod(fd, mode)
        if callable(payload):
            with os.fdopen(fd, "wb") as raw:
                fail_as(path, payload, raw)
                fail_as(path, raw.flush)
                fail_as(path, os.fsync, raw.fileno())
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for line in payload:
                    fail_as(path, out.write, line + "\n")
                fail_as(path, out.flush)
                fail_as(path, os.fsync, out.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _write_to(path: str, target: str, data: str | bytes) -> None:
    """Stream a payload to a FIFO or device (a full device such as /dev/full is an error)."""
    fd = fail_as(path, os.open, target, os.O_WRONLY)
    try:
        write_fully(path, fd, data.encode("utf-8") if isinstance(data, str) else data)
    finally:
        os.close(fd)


def write_fully(path: str, fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, unbuffered, so a full device fails here and not in a close that cannot report
    it; errors name the user's ``path``."""
    view = memoryview(data)
    while view:
        view = view[fail_as(path, os.write, fd, view) :]


def fail_as(path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; an OSError becomes a one-line InputError naming the user's ``path``."""
    try:
        return fn(*args, **kwargs)
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=path) from None


def umask() -> int:
    """The process umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

"""JSONL in and out: validate every input line up front, write output atomically (temp file, then rename)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tourney.errors import InputError
from tourney.types import Prompt


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
    """Read and validate a JSONL file (``-`` for stdin); raise InputError on the first bad line."""
    name = "<stdin>" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as err:
        raise InputError(f"cannot read input: {err.strerror}", file=name) from None
    items: list[Item] = []
    seen: dict[Any, int] = {}
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark some editors write
        data = data[3:]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"invalid UTF-8 at byte {err.start}", file=name, line=lineno) from None
        item = parse_line(text, name, lineno)
        key = json.dumps(item.id)
        if key in seen:
            raise InputError(f"duplicate id {key} (first on line {seen[key]})", name, lineno, "id")
        seen[key] = lineno
        items.append(item)
    return items


def parse_line(text: str, name: str, lineno: int) -> Item:
    """Validate one JSON line into an Item."""

    def bad(message: str, fld: str | None = None) -> InputError:
        return InputError(message, file=name, line=lineno, field=fld)

    try:
        row = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise bad(f"malformed JSON: {err.msg} at column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # NaN/Infinity, integers past Python's digit limit, deep nesting
        raise bad(f"malformed JSON: {str(err).splitlines()[0][:120]}") from None
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad("a string holds a lone surrogate escape (e.g. \\ud800), which is not text") from None
    if not isinstance(row, dict):
        raise bad(f"expected a JSON object, got {type(row).__name__}")
    if "prompt" not in row:
        raise bad("missing", "prompt")
    prompt = row["prompt"]
    if isinstance(prompt, list):
        if not prompt:
            raise bad("empty message list", "prompt")
        for k, msg in enumerate(prompt):
            if not isinstance(msg, dict):
                raise bad("expected an object with role and content", f"prompt[{k}]")
            for key in ("role", "content"):
                if not isinstance(msg.get(key), str):
                    raise bad("expected a string", f"prompt[{k}].{key}")
    elif not isinstance(prompt, str):
        raise bad("expected a string or a list of chat messages", "prompt")
    if "responses" not in row:
        raise bad("missing", "responses")
    responses = row["responses"]
    if not isinstance(responses, list):
        raise bad("expected a list", "responses")
    if not responses:
        raise bad("empty list: need at least one response", "responses")
    texts, fields = [], []
    for k, resp in enumerate(responses):
        if isinstance(resp, str):
            texts.append(resp)
            fields.append({})
        elif isinstance(resp, dict):
            if not isinstance(resp.get("text"), str):
                raise bad("expected a string", f"responses[{k}].text")
            for key, kind in (("quality", (int, float)), ("correct", bool)):
                val = resp.get(key)
                if val is not None and (not isinstance(val, kind) or (key == "quality" and isinstance(val, bool))):
                    raise bad(
                        f"expected {'a number' if key == 'quality' else 'true or false'}", f"responses[{k}].{key}"
                    )
            texts.append(resp["text"])
            fields.append({key: val for key, val in resp.items() if key != "text"})
        else:
            raise bad("expected a string or an object with text", f"responses[{k}]")
    ident = row.get("id", lineno)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        raise bad("expected a string or an integer", "id")
    return Item(id=ident, line=lineno, prompt=prompt, texts=texts, fields=fields, row=row)


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; Python's parser accepts them unless told otherwise."""
    raise ValueError(f"{name} is not a JSON number")


def check_writable(path: str) -> None:
    """Fail before any judging if an output path cannot be written (no such folder, or a folder itself)."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError("is a directory, not a file", file=path)
    if not os.path.isdir(folder):
        raise InputError("cannot write: no such directory", file=path)
    if not os.access(folder, os.W_OK):
        raise InputError("cannot write: permission denied", file=path)


def dumps(row: dict[str, Any]) -> str:
    """Serialize one output row deterministically (key order kept, UTF-8 as is)."""
    return json.dumps(row, ensure_ascii=False)


def write_all(outputs: list[tuple[str, Iterable[str]]]) -> None:
    """Write several outputs all or nothing: every file goes to a temp file first, then all are renamed.

    ``-`` writes stdout, last, once every file is in place.
    """
    staged: list[tuple[str, str]] = []
    stdout: list[str] = []
    try:
        for path, lines in outputs:
            if path == "-":
                stdout.extend(line + "\n" for line in lines)
                continue
            fd, tmp = tempfile.mkstemp(prefix=".tourney-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for line in lines:
                    out.write(line + "\n")
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException as err:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise InputError(f"cannot write: {err.strerror}", file=err.filename) from None
        raise
    if stdout:
        sys.stdout.write("".join(stdout))
        sys.stdout.flush()

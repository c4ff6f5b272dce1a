"""A JSONL input for a streaming run: checked whole in one pass that holds no row, then read lazily for the run.

Every row is validated before anything is judged (a bad row at line 900,000 fails before any output, with exit 2),
yet no more than one row is held while checking: ids are checked unique through 8-byte hashes, and the rows a
context check needs (the longest judge prompts) are kept in a small heap. Standard input is spooled to a temp file
during the check, so it can be read a second time.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator

from tourney.errors import InputError
from tourney.io import Item, jsonl_lines, parse_line
from tourney.sink import Resume

KEEP_LONGEST = 256  # rows kept for the context check: the judge prompts longest in bytes


class Source:
    """One JSONL input of prompts with responses (``-``: stdin): ``scan`` it once, then iterate ``items()``."""

    def __init__(self, path: str) -> None:
        """Name the input; nothing is read yet."""
        self.path, self.name = path, "<stdin>" if path == "-" else path
        self.rows = 0  # after scan: how many rows, and the judgments their tournaments plan (an upper bound)
        self.plan = 0
        self.longest: list[Item] = []  # after scan: the rows whose judge prompt is longest in bytes, longest first
        self.complete = True  # whether ``longest`` holds every row with two or more responses
        self.chat = False  # whether any prompt is a list of chat messages
        self._spool: str | None = None

    def scan(self, check: Callable[[Item], None], plan: Callable[[Item], int], resume: Resume | None = None) -> None:
        """Read every row once: parse it, run ``check`` on it, add ``plan(item)`` to the plan; ids must be unique.
        ``resume``: a killed run's stopping point, whose last id must be this input's at that row (only later rows
        count in the plan).

        Raises the first row's InputError; holds no row but the longest few."""
        hashes, lines = array("q"), array("q")
        heap: list[tuple[int, int, Item]] = []
        judged = 0
        for name, lineno, text in self._lines():
            item = parse_line(text, name, lineno)
            check(item)
            self.rows += 1
            self.chat = self.chat or not isinstance(item.prompt, str)
            if resume and self.rows == resume.prompts and json.dumps(item.id) != resume.last_id:
                raise InputError(
                    f"the killed run this would continue wrote {resume.prompts} prompts, the last with id "
                    f"{resume.last_id}; this input's has id {json.dumps(item.id)} (rerun with the same "
                    "input, or delete the .partial and .resume files to start over)",
                    name,
                    lineno,
                    "id",
                )
            if not resume or self.rows > resume.prompts:
                self.plan += plan(item)
            key = json.dumps(item.id).encode()
            hashes.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True))
            lines.append(lineno)
            if len(item.texts) >= 2:
                judged += 1
                a, b = sorted(item.texts, key=len)[-2:]
                bound = len(("".join(map(str, item.prompt)) + a + b).encode())  # as api.prompt_lengths bounds it
                entry = (bound, -lineno, _slim(item))
                if len(heap) < KEEP_LONGEST:
                    heapq.heappush(heap, entry)
                elif entry[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, entry)
        self._check_ids(hashes, lines)
        if resume and self.rows < resume.prompts:
            raise InputError(
                f"has {self.rows} prompts, but the killed run this would continue wrote {resume.prompts} "
                "(rerun with the same input, or delete the .partial and .resume files)",
                self.name,
            )
        self.longest = [item for _, _, item in sorted(heap, key=lambda e: e[:2], reverse=True)]
        self.complete = judged <= KEEP_LONGEST

    def items(self) -> Iterator[Item]:
        """The rows again, lazily, in input order (already checked by ``scan``)."""
        for _, lineno, text in jsonl_lines(self._spool or self.path):
            yield parse_line(text, self.name, lineno)

    def chunks(self, size: int = 4096) -> Iterator[list[Item]]:
        """The rows again in lists of ``size``: for a check that must see every row but may not hold them all."""
        chunk: list[Item] = []
        for item in self.items():
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        """Delete the spooled copy of stdin, if any."""
        if self._spool:
            os.unlink(self._spool)
            self._spool = None

    def _lines(self) -> Iterator[tuple[str, int, str]]:
        """The input's lines for the scan; stdin is copied to a temp file as it is read."""
        if self.path != "-":
            yield from jsonl_lines(self.path)
            return
        fd, self._spool = tempfile.mkstemp(prefix="tourney-stdin-", suffix=".jsonl")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        for _, lineno, text in jsonl_lines(self._spool):
            yield self.name, lineno, text

    def _check_ids(self, hashes: array, lines: array) -> None:
        """A repeated id is an InputError at its second line (found by hash, confirmed on the rows themselves)."""
        import numpy as np

        h = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, np.int64)
        order = np.argsort(h, kind="stable")
        same = np.nonzero(h[order][1:] == h[order][:-1])[0]
        if not len(same):
            return
        ln = np.frombuffer(lines, dtype=np.int64)
        pairs = sorted((int(ln[order[i + 1]]), int(ln[order[i]])) for i in same)  # (later line, earlier line)
        wanted = {n for pair in pairs for n in pair}
        ids = {lineno: json.dumps(parse_line(text, name, lineno).id)
               for name, lineno, text in jsonl_lines(self._spool or self.path) if lineno in wanted}  # fmt: skip
        for later, first in pairs:
            if ids[later] == ids[first]:  # not a hash collision
                raise InputError(f"duplicate id {ids[later]} (first on line {first})", self.name, later, "id")


def _slim(item: Item) -> Item:
    """A row for the context check: the prompt and its two longest responses only (keeps the heap small)."""
    texts = sorted(item.texts, key=len)[-2:]
    return Item(item.id, item.line, item.prompt, texts, [{} for _ in texts])

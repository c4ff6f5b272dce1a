"""A JSONL input for a streaming run: checked whole in one pass that holds no row, then read lazily for the run.

Every row is validated before anything is judged (a bad row at line 900,000 fails before any output, with exit 2),
yet no more than one row is held while checking: ids are checked unique through 8-byte hashes, and the rows a
context check needs (the longest judge prompts) are kept in a small heap. Standard input is spooled to a temp file
first, so it can be read a second time. A large file is checked by one forked process per core, each scanning the
lines that begin in its byte range; their findings are merged as one pass would have found them.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import shutil
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tourney.console import plural
from tourney.errors import InputError
from tourney.io import Item, input_name, jsonl_lines, parse_line, streamed
from tourney.sink import Resume
from tourney.tables import is_table

KEEP_LONGEST = 256  # rows kept for the context check: the judge prompts longest in bytes
PARALLEL_BYTES = 64 << 20  # an input this large is scanned by several processes at once (one per core)
MAX_WORKERS = 8


class Source:
    """One JSONL input of prompts with responses (``-``: stdin): ``scan`` it once, then iterate ``items()``."""

    def __init__(self, path: str, limit: int | None = None) -> None:
        """Name the input (``limit``: only its first rows); nothing is read yet."""
        self.path, self.name, self.limit = path, input_name(path), limit
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

        Raises the first row's InputError; holds no row but the longest few. A large file is read by one process per
        core (parts of it at once; the first error in file order is the one raised)."""
        path = self._readable()
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
        resume = resume if resume and resume.prompts else None  # a continued run checks its row one pass at a time
        whole = self.limit is None and not is_table(path)
        if resume is None and workers > 1 and whole and _size(path) >= PARALLEL_BYTES and _can_fork():
            parts = _scan_parallel(path, self.name, check, plan, workers)
        else:
            parts = [_scan_part(path, self.name, 0, None, 1, check, plan, resume, self.limit)]
        heap: list[tuple[int, int, Item]] = []
        hashes, lines = array("q"), array("q")
        judged = 0
        for part in parts:
            self.rows += part.rows
            self.plan += part.plan
            self.chat = self.chat or part.chat
            judged += part.judged
            hashes.frombytes(part.hashes)
            lines.frombytes(part.lines)
            heap += part.longest
        self._check_ids(hashes, lines)
        if resume and self.rows < resume.prompts:
            raise InputError(
                f"has {plural(self.rows, 'prompt')}, but the killed run this would continue wrote {resume.prompts} "
                "(rerun with the same input, or delete the .partial and .resume files)",
                self.name,
            )
        heap.sort(key=lambda e: e[:2], reverse=True)
        self.longest = [item for _, _, item in heap[:KEEP_LONGEST]]
        self.complete = judged <= KEEP_LONGEST

    def items(self) -> Iterator[Item]:
        """The rows again, lazily, in input order (already checked by ``scan``)."""
        for _, lineno, text in itertools.islice(jsonl_lines(self._readable(), name=self.name), self.limit):
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

    def _readable(self) -> str:
        """The input as a file that can be read twice: stdin, or a path that is a pipe (``<(zcat f)``, /dev/stdin, a
        FIFO) or a device, is copied to a temp file first (read once, it would be empty the second time)."""
        if self.path != "-" and not _streamed(self.path):
            return self.path
        if self._spool is None:
            fd, self._spool = tempfile.mkstemp(prefix="tourney-stdin-", suffix=".jsonl")
            with os.fdopen(fd, "wb") as out:
                if self.path == "-":
                    shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
                else:
                    with open(self.path, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        return self._spool

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
        ids = {lineno: parse_line(text, name, lineno).id
               for name, lineno, text in jsonl_lines(self._spool or self.path) if lineno in wanted}  # fmt: skip
        for later, first in pairs:
            if str(ids[later]) == str(ids[first]):  # not a hash collision
                raise InputError(f"duplicate id {json.dumps(ids[later])} (first on line {first})", self.name, later,
                                 "id")  # fmt: skip


def _streamed(path: str) -> bool:
    """Whether ``path`` is a pipe or a device (not a file or folder that can be read again)."""
    try:
        return streamed(os.stat(path).st_mode)
    except OSError:
        return False  # missing: the reader says so


@dataclass
class _Part:
    """What scanning one byte range of the input found (see ``Source.scan``)."""

    rows: int = 0
    plan: int = 0
    chat: bool = False
    judged: int = 0  # rows with two or more responses
    hashes: bytes = b""  # each row's id, hashed to 8 bytes (array "q")
    lines: bytes = b""  # each row's line number (array "q")
    longest: list[tuple[int, int, Item]] = field(default_factory=list)  # (bound, -line, slim row): the longest


def _scan_part(
    path: str,
    name: str,
    start: int,
    end: int | None,
    first_line: int,
    check: Callable[[Item], None],
    plan: Callable[[Item], int],
    resume: Resume | None = None,
    limit: int | None = None,
) -> _Part:
    """Scan the rows that begin in bytes ``start``..``end`` of ``path`` (see ``Source.scan``); raise the first
    InputError."""
    part = _Part()
    hashes, lines = array("q"), array("q")
    heap: list[tuple[int, int, Item]] = []
    for _, lineno, text in itertools.islice(jsonl_lines(path, start, end, first_line, name), limit):
        item = parse_line(text, name, lineno)
        check(item)
        part.rows += 1
        part.chat = part.chat or not isinstance(item.prompt, str)
        if resume and part.rows == resume.prompts and json.dumps(item.id) != resume.last_id:
            raise InputError(
                f"the killed run this would continue wrote {plural(resume.prompts, 'prompt')}, the last with id "
                f"{resume.last_id}; this input's has id {json.dumps(item.id)} (rerun with the same "
                "input, or delete the .partial and .resume files to start over)",
                name,
                lineno,
                "id",
            )
        if not resume or part.rows > resume.prompts:
            part.plan += plan(item)
        key = str(item.id).encode()  # 5 and "5" are one id (see ``io.unique_ids``)
        hashes.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True))
        lines.append(lineno)
        if len(item.texts) >= 2:
            part.judged += 1
            a, b = sorted(item.texts, key=len)[-2:]
            bound = len(("".join(map(str, item.prompt)) + a + b).encode())  # as api.prompt_lengths bounds it
            entry = (bound, -lineno, _slim(item))
            if len(heap) < KEEP_LONGEST:
                heapq.heappush(heap, entry)
            elif entry[:2] > heap[0][:2]:
                heapq.heapreplace(heap, entry)
    part.hashes, part.lines, part.longest = hashes.tobytes(), lines.tobytes(), heap
    return part


def _size(path: str) -> int:
    """The file's size; 0 when it cannot be read (the one-pass scan then reports why, naming the file)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _can_fork() -> bool:
    """Whether worker processes can be forked (they inherit the checks, which need not be picklable): only from a
    process of one thread, as the CLI is while it checks its input (a lock held by another thread would stay held
    in the child)."""
    import multiprocessing
    import threading

    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _scan_parallel(
    path: str, name: str, check: Callable[[Item], None], plan: Callable[[Item], int], workers: int
) -> list[_Part]:
    """Scan ``path`` in ``workers`` byte ranges at once, one forked process each; raise the first range's error."""
    import multiprocessing

    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, workers):
            f.seek(max(cuts[-1], size * k // workers - 1))
            f.readline()  # to the start of the next line
            cuts.append(max(cuts[-1], f.tell()))
    cuts.append(size)
    ranges = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    ctx = multiprocessing.get_context("fork")
    procs = []
    try:
        for a, b in ranges:
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_scan_worker, args=(send, path, name, a, b, check, plan), daemon=True)
            proc.start()
            send.close()
            procs.append((proc, receive))
        results = []
        for proc, receive in procs:
            try:
                results.append(receive.recv())
            except EOFError:
                proc.join()
                raise RuntimeError(f"a process checking {name} died (exit code {proc.exitcode})") from None
        for result in results:
            if isinstance(result, tuple):
                raise InputError(*result)
        return results
    finally:
        for proc, receive in procs:
            receive.close()
            if proc.is_alive():
                proc.terminate()
            proc.join()


def _scan_worker(send: Any, path: str, name: str, start: int, end: int, check: Any, plan: Any) -> None:
    """A forked process's part of ``_scan_parallel``: count the lines before ``start``, scan, send the part (or the
    first InputError's parts)."""
    try:
        first_line = 1
        with open(path, "rb") as f:
            left = start
            while left:
                block = f.read(min(left, 1 << 24))
                first_line += block.count(b"\n")
                left -= len(block)
        try:
            send.send(_scan_part(path, name, start, end, first_line, check, plan))
        except InputError as err:  # as its parts: a pickled exception would come back with its line as the message
            send.send((err.message, err.file, err.line, err.field))
    except KeyboardInterrupt:  # Ctrl-C reached the whole process group: the parent reports it
        pass
    finally:
        send.close()


def _slim(item: Item) -> Item:
    """A row for the context check: the prompt and its two longest responses only (keeps the heap small)."""
    texts = sorted(item.texts, key=len)[-2:]
    return Item(item.id, item.line, item.prompt, texts, [{} for _ in texts])

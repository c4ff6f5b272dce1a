"""Outputs written as a run goes, and resumed after a kill.

A streaming run's JSONL outputs (``-o``, ``--judgments``) get each prompt's lines in input order as soon as the
prompt and every earlier one are done. A regular file is written to ``PATH.partial`` and renamed to ``PATH`` at the
end (an existing ``PATH`` is replaced only by a finished run); after each flush a checkpoint line goes to
``PATH.resume`` (prompts written, the last one's id, each partial file's size). A re-run of the same command finds
the checkpoint, checks the settings' hash and the input's ids against it, cuts the partial files back to the
checkpoint and continues with the next prompt: nothing written is redone, nothing is mixed. Standard output, FIFOs
and devices are written to directly; a run with one of them cannot resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tourney.errors import InputError
from tourney.io import fail_as, output_target, shown, umask, write_fully

FLUSH_S = 0.5  # at most this long between flushes, so rows appear as prompts finish
FLUSH_BYTES = 1 << 20


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of everything that decides a run's output bytes."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resume:
    """Where a killed run stopped: prompts written, the last one's id (JSON), each output's size in bytes."""

    prompts: int = 0
    last_id: str | None = None
    sizes: tuple[int, ...] = ()


class Sink:
    """The JSONL outputs of one run, in the order they are flushed (put ``--judgments`` before ``-o``, so a row that
    reached its file always has its judgments in theirs). The resume point is kept beside ``-o``."""

    def __init__(self, outputs: Sequence[tuple[str, str]], settings: dict[str, Any], resumable: bool = True) -> None:
        """``outputs``: (option, path) pairs; ``resumable``: False when another output is written whole at the end;
        nothing is opened before ``open``."""
        self.options = [option for option, _ in outputs]
        self.paths = [path for _, path in outputs]
        targets = [output_target(path) for path in self.paths]
        self.targets = [target for target, _ in targets]
        self.regular = [not streamed for _, streamed in targets]
        self.settings, self.given = settings_hash(settings), settings
        main = self.targets[self.options.index("-o")] if "-o" in self.options else None
        # Resuming needs every output as a file; with stdout or a FIFO among them, a re-run starts over.
        self.log = main + ".resume" if resumable and main is not None and all(self.regular) else None
        self.resumable = resumable
        self._fds: list[int] = []
        self._log_fd = -1
        self._buffers: list[list[str]] = [[] for _ in outputs]
        self._buffered = 0
        self._sizes = [0] * len(outputs)
        self._last_flush = 0.0
        self._prompts = 0
        self._last_id: str | None = None

    @property
    def written(self) -> int:
        """Prompts whose lines are handed over so far (the resumed ones included)."""
        return self._prompts

    def partial(self, k: int) -> str:
        """Where output ``k`` is written until the run ends."""
        return self.targets[k] + ".partial"

    def resume_point(self) -> Resume:
        """Read (never write) where a killed run of the same command stopped; InputError if it cannot go on."""
        if self.log is None or not os.path.exists(self.log):
            return Resume()
        try:
            with open(self.log, "rb") as f:
                lines = f.read().split(b"\n")
            if len(lines) == 1:  # killed before its first line was whole (an empty file): nothing to go on from
                return Resume()
            head = json.loads(lines[0])
            marks = []
            for raw in lines[1:]:
                with contextlib.suppress(ValueError):  # a line cut short by the kill
                    marks.append(json.loads(raw))
        except (OSError, ValueError):
            raise InputError("cannot read this resume file; delete it (and the .partial files) to start over",
                             file=shown(self.log)) from None  # fmt: skip
        if not marks:  # killed before its first prompt was written: nothing to go on from, whatever its command
            return Resume()
        recorded = head.get("partials") if isinstance(head.get("partials"), list) else []
        theirs = head.get("outputs") if isinstance(head.get("outputs"), list) else []
        moved = self._moved(theirs, recorded)
        if head.get("settings") != self.settings or theirs != self.options or moved:
            also = self._partials(recorded)
            outputs = sorted({str(o) for o in theirs} ^ set(self.options)) + moved
            named = changed(head.get("given"), self.given) + outputs
            if not named:
                what = ""
            elif not named[0].startswith("-"):  # another command: the options are not comparable
                what = f" ({named[0]})"
            else:
                what = f" ({', '.join(named)} {'differs' if len(named) == 1 else 'differ'})"
            raise InputError(f"a killed run with other settings or outputs{what} left this; rerun that command to "
                             f"finish it, or delete it{also} to start over", file=shown(self.log))  # fmt: skip
        mark = marks[-1]
        sizes = tuple(int(n) for n in mark["bytes"])
        for k, size in enumerate(sizes):
            have = os.path.getsize(self.partial(k)) if os.path.exists(self.partial(k)) else -1
            if have < size:
                raise InputError(f"holds less than its resume file says ({max(have, 0)} < {size} bytes); delete it "
                                 f"and {shown(self.log)} to start over", file=shown(self.partial(k)))  # fmt: skip
        return Resume(int(mark["prompts"]), mark["id"], sizes)

    def open(self, resume: Resume) -> None:
        """Open every output: continue the partial files after ``resume``, or start them empty."""
        mode = 0o666 & ~umask()
        for k, (path, target) in enumerate(zip(self.paths, self.targets)):
            if path == "-":
                self._fds.append(-1)
            elif not self.regular[k]:
                self._fds.append(fail_as(path, os.open, target, os.O_WRONLY))
            else:
                keep = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else mode
                flags = os.O_WRONLY | os.O_CREAT | (0 if resume.prompts else os.O_TRUNC)
                fd = fail_as(path, os.open, self.partial(k), flags, keep)
                os.fchmod(fd, keep)  # the final file's mode: os.open's own is cut by the umask
                if resume.prompts:
                    fail_as(path, os.ftruncate, fd, resume.sizes[k])
                os.lseek(fd, 0, os.SEEK_END)
                self._fds.append(fd)
        self._sizes = list(resume.sizes) if resume.prompts else [0] * len(self.paths)
        self._prompts, self._last_id = resume.prompts, resume.last_id
        if self.log is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if resume.prompts else os.O_TRUNC)
            self._log_fd = fail_as(self.paths[0], os.open, self.log, flags, mode)
            if not resume.prompts:
                # The partial files, from the resume file's folder: a re-run that refuses to go on (other outputs)
                # names them all.
                head = {"tourney": "resume", "settings": self.settings, "outputs": self.options,
                        "partials": self._here(), "given": self.given}  # fmt: skip
                os.write(self._log_fd, (json.dumps(head) + "\n").encode())

    def put(self, lines: Sequence[Sequence[str]], prompt_id: Any) -> None:
        """One prompt's lines for each output (same order as the outputs), written once due."""
        for buf, new in zip(self._buffers, lines):
            buf.extend(new)
            self._buffered += sum(map(len, new))
        self._prompts += 1
        self._last_id = json.dumps(prompt_id)
        if self._buffered >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, every output in order, then the checkpoint."""
        for k, buf in enumerate(self._buffers):
            if not buf:
                continue
            data = "".join(line + "\n" for line in buf).encode("utf-8")
            buf.clear()
            if self._fds[k] == -1:
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                write_fully(self.paths[k], self._fds[k], data)
            self._sizes[k] += len(data)
        self._buffered = 0
        self._last_flush = time.monotonic()
        if self._log_fd != -1 and self._prompts:
            mark = {"prompts": self._prompts, "id": self._last_id, "bytes": self._sizes}
            os.write(self._log_fd, (json.dumps(mark) + "\n").encode())

    def stop(self) -> None:
        """Flush and close, keeping the partial files and the checkpoint (an interrupted or failed run); a run that
        wrote no prompt leaves none (a failed start must not hold back the corrected command), nor does one that
        cannot resume (stdout or a FIFO among its outputs: ``| head -1`` closing the pipe)."""
        with contextlib.suppress(InputError, OSError):
            self.flush()
        self._close()
        if not self._prompts or self.log is None:
            for name in self._partial_files() + ([self.log] if self.log else []):
                with contextlib.suppress(OSError):
                    os.unlink(name)

    def finish(self) -> None:
        """Flush, sync and close; then put every partial file in place and drop the checkpoint."""
        self.flush()
        for k, fd in enumerate(self._fds):
            if fd != -1 and self.regular[k]:
                fail_as(self.paths[k], os.fsync, fd)
        self._close()
        for k, target in enumerate(self.targets):
            if self.regular[k]:
                fail_as(self.paths[k], os.replace, self.partial(k), target)
        if self.log is not None:
            os.unlink(self.log)

    def dropped(self) -> str:
        """After ``stop`` of a run that cannot resume: which file outputs it dropped and why ("" if none)."""
        if self.log is not None or not self._prompts:
            return ""
        files = [option for option, regular in zip(self.options, self.regular) if regular]
        if not files:
            return ""
        why = "-o is Parquet, written whole at the end" if not self.resumable else "stdout or a FIFO is an output"
        return f"{' and '.join(files)} not kept: {why}, so the run cannot resume"

    def where(self) -> str:
        """Where an interrupted run's rows are, for the message that says how to continue."""
        if not self.paths:
            return ""
        k = self.options.index("-o") if "-o" in self.options else 0
        return shown(self.partial(k)) if self.regular[k] else self.paths[k]

    def _close(self) -> None:
        for fd in [*self._fds, self._log_fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fds, self._log_fd = [-1 for _ in self._fds], -1

    def _partial_files(self) -> list[str]:
        """The partial files of this run's file outputs (streams have none)."""
        return [self.partial(k) for k, regular in enumerate(self.regular) if regular]

    def _folder(self) -> str:
        """The resume file's folder: the head records partial files relative to it."""
        assert self.log is not None
        return os.path.dirname(os.path.abspath(self.log))

    def _here(self) -> list[str]:
        """This run's partial files, relative to the resume file's folder (as its head records them)."""
        return [os.path.relpath(name, self._folder()) for name in self._partial_files()]

    def _moved(self, theirs: list[Any], recorded: list[Any]) -> list[str]:
        """The outputs given again under another path (``--judgments j2.jsonl`` for the killed run's j.jsonl)."""
        if theirs != self.options or len(recorded) != len(self.options):  # other outputs, or an older resume file
            return []
        return [o for o, a, b in zip(self.options, recorded, self._here(), strict=True) if a != b]

    def _partials(self, recorded: Sequence[Any] = ()) -> str:
        """' and A and B': the partial files there are of this run's outputs and of the killed run's (``recorded``,
        relative to the resume file's folder)."""
        names = self._partial_files()
        mine = {os.path.abspath(n) for n in names}
        theirs = [os.path.join(self._folder(), n) for n in recorded if isinstance(n, str)]
        names += [shown(n) for n in theirs if os.path.abspath(n) not in mine]
        there = [shown(n) for n in names if os.path.exists(n)]
        return " and " + " and ".join(there) if there else ""


# Settings whose option is not --NAME (``run_settings``' keys, by path).
OPTION_OF = {"judge.judge": "--judge", "judge.engine_kwargs": "--engine-arg"}


def changed(before: Any, now: dict[str, Any]) -> list[str]:
    """The options whose value differs between two runs' settings (``run_settings``), as the user gives them."""
    if not isinstance(before, dict):  # a resume file from before settings were kept
        return []
    old, new = flat(before), flat(json.loads(json.dumps(now)))  # as the resume file holds it: tuples are lists
    if old.get("command") != new.get("command"):  # another command's options: only the command itself says it
        return [f"it was tourney {old.get('command')}"]
    out: list[str] = []
    for path in sorted(set(old) | set(new)):
        if old.get(path) != new.get(path):
            key = path.rsplit(".", 1)[-1].replace("_", "-")
            name = OPTION_OF.get(path) or (f"--sim-{key}" if path.startswith("judge.sim.") else f"--{key}")
            if name not in out:  # --seed is the judge's and the tournament's
                out.append(name)
    return sorted(out)


def flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Run settings as {"judge.sim.tau": value}: the judge's, its simulator's and the tournament's taken apart."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ("judge", "tournament", "sim") and isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out

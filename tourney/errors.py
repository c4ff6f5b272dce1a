"""The two errors that end a run with one line: InputError (a value of the user's: exit 2), BackendError (exit 1)."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input; ``str(err)`` is the one line shown to the user: ``FILE:LINE: field: problem``."""

    def __init__(
        self, message: str, file: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        """Build the error from its parts; any part may be missing."""
        self.message, self.file, self.line, self.field = message, file, line, field
        where = ":".join(str(x) for x in (file, line) if x is not None)
        named = (f"option {field}" if field.startswith("-") else f"field '{field}'") if field else None  # -o, --budget
        parts = [p for p in (where, named, message) if p]
        super().__init__(": ".join(parts))


class BackendError(Exception):
    """A judge backend failed in a way retries cannot fix (unreachable server, wrong model, context overflow).

    ``index`` may name the request of the batch that caused it; the engine turns that into a prompt id and line.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        """Keep the message and the offending request's position in the batch, if known."""
        super().__init__(message)
        self.index = index

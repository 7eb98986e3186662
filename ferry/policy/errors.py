"""The one error family of ferry.policy."""

from __future__ import annotations


class PolicyError(Exception):
    """A policy file is unreadable or invalid; names the file, line and key.

    ``str(e)`` is ``"file:line: key: message"`` (line and key left out when
    unknown). ``errors`` holds every problem found, this one first.
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        key: str,
        message: str,
        errors: tuple[PolicyError, ...] = (),
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        self.errors: tuple[PolicyError, ...] = errors or (self,)
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def __str__(self) -> str:
        return self._format()

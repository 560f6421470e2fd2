"""Errors users see. Library code raises these; only the CLI turns them into an exit status."""

from __future__ import annotations


class LoraforgeError(Exception):
    """A problem the user can fix: what went wrong, in their terms, and what to do about it."""

    def __init__(self, message: str, hint: str | None = None, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        if self.path:
            text += f"\n  see: {self.path}"
        return text


class ConfigError(LoraforgeError):
    """One or more invalid job settings, all reported at once."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid job settings{where}:\n{lines}")


class BackendNotReady(LoraforgeError):
    """The backend's environment is missing or broken."""

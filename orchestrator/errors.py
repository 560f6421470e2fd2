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


class NotEnoughDisk(LoraforgeError):
    """A folder's disk lacks the room a step needs, found before the step starts (not half way through it)."""


# What to do about a failure of the world, by errno name: the message names the file, this says the fix.
_OS_FIXES = {
    "ENOSPC": ("no space left on the device", "free some space there (or write elsewhere), then run the command again"),
    "EDQUOT": ("disk quota exceeded", "free some of your quota, then run the command again"),
    "EACCES": ("permission denied", "check the folder's permissions, or write elsewhere"),
    "EPERM": ("operation not permitted", "check the file's permissions and owner, or write elsewhere"),
    "EROFS": ("the file system is read-only", "write to a writable folder (another -o, output.dir or LORAFORGE_HOME)"),
    "ENOENT": ("no such file or folder", "check the path"),
    "EISDIR": ("is a folder, not a file", "pass a file"),
    "EEXIST": ("already exists", "choose another name or folder, or move that one away"),
    "ENOTDIR": ("a part of the path is not a folder", "check the path"),
    "ENAMETOOLONG": ("the file name is too long", "use a shorter name or path"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n) or close other programs"),
    "EIO": ("input/output error: the disk or its connection failed", "check the disk (dmesg), then try again"),
}


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: what, on which file, and what to do."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    what, fix = _OS_FIXES.get(name, (exc.strerror or str(exc), "check the path and try again"))
    where = f" {exc.filename!s}" if exc.filename is not None else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2!s}"
    return f"{what}:{where}\n  fix: {fix}" if where else f"{what}\n  fix: {fix}"

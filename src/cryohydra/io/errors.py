"""Errors for bad input: every message names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class InputFileError(ValueError):
    """A user's file cannot be used as it is. The message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable (sent between the ranks of a torchrun run)
        return (type(self), (self.path, self.problem))


class OutputExistsError(FileExistsError):
    """Refusal to overwrite a file the user already has."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(f"{path}: already exists; refusing to overwrite it (use --force)")

    def __reduce__(self):
        return (type(self), (self.path,))


def check_writable(path: str | Path, force: bool) -> Path:
    """Return ``path`` if it may be written: new, or ``force`` given. Creates the parent folder."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path

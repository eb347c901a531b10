"""Read one of the agent's spec files into a JSON value, refusing what is not a spec.

Only a regular file (symlinks followed) of at most MAX_SPEC_BYTES is read: a
FIFO would block the read forever and a link to /dev/zero would never end it.
The file is checked before it is opened, opened non-blocking, and checked
again once open. Every failure is an UnreadableFile whose `problem` says why
in a line; controller.spec turns it into a SpecError naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_SPEC_BYTES = 16 * 1024 * 1024  # a real spec is kilobytes

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(Exception):
    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def read_json(path: Path) -> Any:
    """The file's JSON value; FileNotFoundError if it does not exist."""
    try:
        data = _read_bytes(path)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableFile(f"cannot read file: {error.strerror or error}") from error
    if not data.strip():
        raise UnreadableFile("file is empty")
    try:
        return json.loads(data)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise UnreadableFile(f"invalid JSON: {' '.join(str(error).split())}") from error
    except (RecursionError, MemoryError) as error:  # nested too deep, or too large
        problem = f"JSON too deep or too large to read ({type(error).__name__})"
        raise UnreadableFile(problem) from error


def _read_bytes(path: Path) -> bytes:
    _check(path.stat())  # follows symlinks; a FIFO or device is never opened
    # O_NONBLOCK: should the path become a FIFO after the stat, open() cannot block
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as file:
        _check(os.fstat(file.fileno()))  # what was opened, not what was seen
        data = file.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:  # grew while we read it
        raise UnreadableFile(f"file is larger than the {MAX_SPEC_BYTES} bytes a spec may have")
    return data


def _check(status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(status.st_mode)), "special")
        raise UnreadableFile(f"cannot read file: not a regular file ({kind})")
    if status.st_size > MAX_SPEC_BYTES:
        raise UnreadableFile(
            f"file is {status.st_size} bytes, more than the {MAX_SPEC_BYTES} a spec may have"
        )

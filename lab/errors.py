"""The one exception type the lab raises for bad input: its message is shown to the user as is."""
from __future__ import annotations

import errno
from pathlib import Path


class LabError(Exception):
    """A problem the user can fix (bad model, corpus, setting, run id...). The message says
    what is wrong and what to do; the CLI prints it without a traceback, the UI shows it."""


def regular_file(path: str | Path, what: str) -> Path:
    """`path` if it is an existing regular file; otherwise a LabError naming `what` it should
    be. Reading a FIFO or a device would block or never end, so they are refused by type."""
    p = Path(path)
    try:
        if p.is_file():
            return p
        exists = p.exists()
    except OSError as e:
        raise LabError(f"{what} {p} cannot be read ({e.strerror or e}).") from e
    if not exists:
        raise LabError(f"{what} {p} does not exist.")
    kind = "a folder" if p.is_dir() else "not a regular file (a pipe, socket or device)"
    raise LabError(f"{what} {p} is {kind}; give a regular file.")


# Writes that failed for want of room, by the words the OS (and DuckDB, safetensors, which
# only pass its text on) uses for them.
_NO_ROOM = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
            errno.EFBIG: "File too large"}


def storage_full(folder: str | Path, error: BaseException, doing: str = "") -> LabError | None:
    """A LabError naming the data folder `folder` (and what was `doing`) and what to free when
    `error` (or its cause) is a full disk, a full quota or the file size limit; None for any
    other error."""
    seen: BaseException | None = error
    for _ in range(8):         # the error and its causes (a chain, which could loop)
        if seen is None:
            break
        code = getattr(seen, "errno", None)
        text = str(seen)
        for no, words in _NO_ROOM.items():
            if code == no or words in text:
                what = {errno.EFBIG: "a file reached this process's size limit, `ulimit -f`",
                        errno.EDQUOT: "your disk quota is used up"}.get(no, "the disk is full")
                return LabError(
                    f"Could not {doing or 'write'} in {folder}: {words} ({what}). Free space there (old runs' "
                    f"checkpoints are in {Path(folder) / 'runs'}/<run id>/checkpoints, reports in "
                    f"{Path(folder) / 'exports'}), or use a data folder on another disk "
                    "(--data-dir, THOUGHTLAB_DATA_DIR).")
        seen = seen.__cause__ or seen.__context__
    return None

"""Key files kept in the storage folder (the image links' key, the content credentials'
identity): created once, whole or not at all, readable by their owner only, and never
overwritten, however many processes start at once."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

#: ``os.link`` errors of file systems without hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def create_once(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` unless another process already has; never overwrite.

    Each process writes its own into a private temporary file and hard-links it into
    place, which fails once the file exists: the first link wins, and every process then
    reads that one."""
    # A crash between open and unlink leaves a ".part" file, which the sweeper removes.
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(8)}.part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)  # whole and durable, or not there at all
        except FileExistsError:
            return  # another process was first: its file is the file
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            _create_without_links(path, data)
        _sync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _create_without_links(path: Path, data: bytes) -> None:
    """Where the file system has no hard links: create the file itself exclusively
    (a process starting in the same instant may then see it before it is written)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sync_folder(folder: Path) -> None:
    """Make a new entry in ``folder`` survive a power cut (where folders can be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""The data directory and every file the server writes are private to the server's user.

The database holds the keys that sign feedback and page tokens (`server_secrets`), and the
data directory the bootstrap admin key. A umask of 077, set once at start before anything is
written, makes every file the process or its libraries create 0600 and every directory 0700,
including the SQLite -wal, -shm and -journal files that SQLite creates itself; what an older
version left readable to others is tightened at start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from agentplane_server.config import Settings

PRIVATE_UMASK = 0o077
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def sqlite_file(database_url: str) -> Path | None:
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def make_private(settings: Settings) -> None:
    """Set the umask, create the data directory 0700, and take group and other permissions
    off everything already in it (and off the SQLite files, wherever the URL puts them)."""
    os.umask(PRIVATE_UMASK)
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [data_dir, *data_dir.rglob("*")]
    database = sqlite_file(settings.resolved_database_url)
    if database is not None:
        paths += [database, *(Path(f"{database}{suffix}") for suffix in SQLITE_SIDE_FILES)]
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        # Symbolic links and other users' files are the operator's business, not ours.
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & PRIVATE_UMASK:
            path.chmod(mode & ~PRIVATE_UMASK)

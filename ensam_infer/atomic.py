"""Write-then-rename, so a reader (or the next container run) only ever sees the old file
or the complete new one, never a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` to write to. It replaces `path` when the block ends
    normally and is removed when the block raises. `suffix` matters to writers that choose
    the format by extension (SimpleITK). Temporary names start with `.<name>.` so a clean-up
    of files left by a killed process can find them."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

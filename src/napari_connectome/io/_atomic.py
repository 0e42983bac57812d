"""Write-then-rename: a store or file appears complete or not at all."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """Return a fresh hidden path beside ``path`` (``.NAME.tmp-XXXXXXXX``) to write into."""
    return path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; quietly do nothing when it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except OSError:  # pragma: no cover
            pass


def move_into_place(
    tmp: Path, path: Path, *, overwrite: bool, exists_error: type = FileExistsError
) -> None:
    """Rename ``tmp`` to ``path``; an old ``path`` is removed only once that succeeded.

    Parameters
    ----------
    tmp : pathlib.Path
        The finished temporary file or folder.
    path : pathlib.Path
        Where it goes.
    overwrite : bool
        Replace an existing ``path``.
    exists_error : type, optional
        Exception raised when ``path`` appeared while writing and ``overwrite`` is False.
    """
    if not (path.exists() or path.is_symlink()):
        os.rename(tmp, path)
        return
    if not overwrite:  # appeared while we were writing
        raise exists_error(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    old = path.parent / f".{path.name}.old-{secrets.token_hex(4)}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    remove_path(old)

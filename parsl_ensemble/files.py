"""A parsl `File` as the worker sees it, without importing parsl.

Unpickling a `parsl.data_provider.files.File` imports parsl (0.7 s or more), and file-based
workflows pass Files to most tasks. The executor sends each File as this class, which has the
same attributes and behaviour inside the app (`filepath`, `url`, `scheme`, `netloc`, `path`,
`filename`, `local_path`, `cleancopy()`, `str()`, `os.fspath()`); one that travels back (an app
returning a File) arrives as a parsl File again.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse


class File:
    """Worker-side twin of parsl.data_provider.files.File (parsl 2026.10.26)."""

    def __init__(self, url: str | os.PathLike, local_path: str | None = None) -> None:
        self.url = str(url)
        parsed = urlparse(self.url)
        self.scheme = parsed.scheme or "file"
        self.netloc = parsed.netloc
        self.path = parsed.path
        self.filename = os.path.basename(self.path)
        self.local_path = local_path

    def cleancopy(self) -> File:
        return File(self.url)

    @property
    def filepath(self) -> str:
        if self.local_path is not None:
            return self.local_path
        if self.scheme == "file":
            return self.path
        raise ValueError(f"No local_path set for {self!r}")

    def __fspath__(self) -> str:
        return self.filepath

    def __str__(self) -> str:
        return self.filepath

    def __repr__(self) -> str:
        local = f" local_path={self.local_path}" if self.local_path is not None else ""
        return (
            f"<File at 0x{id(self):x} url={self.url} scheme={self.scheme} netloc={self.netloc} "
            f"path={self.path} filename={self.filename}{local}>"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return parsl_file, (self.url, self.local_path)


def parsl_file(url: str, local_path: str | None) -> Any:
    """A parsl File again, on the submit side."""
    from parsl.data_provider.files import File as ParslFile

    file = ParslFile(url)
    file.local_path = local_path
    return file

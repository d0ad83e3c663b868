"""Library directories: ollama's LibOllamaPath rule and mlplug's ``MLPLUG_LIB_PATH``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["LIB_PATH_ENV", "find_lib_ollama_path", "lib_path"]

#: Environment variable holding mlplug's library directories, separated by ``os.pathsep``.
LIB_PATH_ENV: Final = "MLPLUG_LIB_PATH"


def _join(*parts: str) -> str:
    return os.path.normpath(os.path.join(*parts))


def find_lib_ollama_path(
    executable: str | None,
    cwd: str | None,
    os_name: str,
    exists: Callable[[str], bool] = os.path.exists,
) -> str:
    """Return the directory ollama v0.17.5 loads its backend libraries from (``LibOllamaPath``).

    Candidates, first existing wins: the OS rule (``windows``: ``<exe dir>/lib/ollama``,
    ``linux``: ``<exe dir>/../lib/ollama``, ``darwin``: ``<exe dir>``, others: none), then
    ``<exe dir>/build/lib/ollama``, then ``<cwd>/build/lib/ollama``; if none exists, the
    executable's directory. Paths are joined with the running system's separator and normalised.

    :param executable: path of the executable with symlinks already resolved; ``None`` if unknown.
    :param cwd: the working directory; ``None`` if unknown.
    :param os_name: Go's ``GOOS`` (``linux``, ``windows``, ``darwin``); ``sys.platform`` names
        (``win32``) work too.
    :param exists: the existence test (any kind of file-system entry counts).
    :returns: the directory, or ``""`` when the executable or the working directory is unknown.
    """
    if executable is None:
        return ""
    exe_dir = os.path.normpath(os.path.dirname(executable))
    if os_name.startswith("win"):
        first = _join(exe_dir, "lib", "ollama")
    elif os_name.startswith("linux"):
        first = _join(exe_dir, "..", "lib", "ollama")
    elif os_name == "darwin":
        first = exe_dir
    else:
        first = ""
    if cwd is None:
        return ""
    for candidate in (
        first,
        _join(exe_dir, "build", "lib", "ollama"),
        _join(cwd, "build", "lib", "ollama"),
    ):
        if candidate and exists(candidate):
            return candidate
    return exe_dir


def lib_path(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return mlplug's library directories: ``MLPLUG_LIB_PATH`` split on ``os.pathsep``.

    This is the ``LibOllamaPath`` role of the reference: :func:`mlplug.library_paths` starts with
    these entries, and a plugin reports them followed by its own library directory in
    ``DeviceInfo.library_path``. Empty entries are dropped; order is kept.

    :param environ: the environment to read; default ``os.environ``.
    :returns: the directories (empty when the variable is unset).
    """
    value = (os.environ if environ is None else environ).get(LIB_PATH_ENV, "")
    return [p for p in value.split(os.pathsep) if p]

"""A model file is only ever read: every open of it is read-only, its memory map is read-only,
and its bytes and modification time are the same afterwards, whether opening succeeds or not."""

from __future__ import annotations

import builtins
import hashlib
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gguf import GGUFValueType
from model_files import LlamaModel, RawGGUF, write_llama_gguf
from model_helpers import BACKENDS, open_backend

from mlplug.errors import ModelFileError
from mlplug.modelfile import GGUFFile

V = GGUFValueType
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class OpenLog:
    """What was opened while it was installed: (path, mode) pairs and mmap access values."""

    def __init__(self, target: Path) -> None:
        self.target = os.path.realpath(target)
        self.opens: list[str] = []
        self.flags: list[int] = []
        self.mmaps: list[int] = []

    def is_target(self, file: object) -> bool:
        if isinstance(file, int):
            try:
                file = os.readlink(f"/proc/self/fd/{file}")
            except OSError:
                return False
        if not isinstance(file, (str, bytes, os.PathLike)):
            return False
        return os.path.realpath(os.fsdecode(file)) == self.target


@pytest.fixture
def open_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], OpenLog]]:
    """Install wrappers of open, os.open and mmap.mmap that log accesses to one file."""
    logs: list[OpenLog] = []
    real_open, real_os_open, real_mmap = builtins.open, os.open, mmap.mmap

    def logged_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        for log in logs:
            if log.is_target(file):
                log.opens.append(mode)
        return real_open(file, mode, *args, **kwargs)

    def logged_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        for log in logs:
            if log.is_target(path):
                log.flags.append(flags)
        return real_os_open(path, flags, *args, **kwargs)

    def logged_mmap(fileno: int, length: int, *args: Any, **kwargs: Any) -> mmap.mmap:
        for log in logs:
            if log.is_target(fileno):
                access = kwargs.get("access", mmap.ACCESS_DEFAULT)
                prot = kwargs.get("prot", mmap.PROT_READ | mmap.PROT_WRITE)
                log.mmaps.append(access if "prot" not in kwargs else prot)
        return real_mmap(fileno, length, *args, **kwargs)

    def install(target: Path) -> OpenLog:
        log = OpenLog(target)
        logs.append(log)
        return log

    monkeypatch.setattr(builtins, "open", logged_open)
    monkeypatch.setattr(os, "open", logged_os_open)
    monkeypatch.setattr(mmap, "mmap", logged_mmap)
    yield install


def _state(path: Path) -> tuple[str, int]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns


def _assert_read_only(log: OpenLog) -> None:
    assert log.opens or log.flags, "the model file was never opened (is the logging wrong?)"
    for mode in log.opens:
        assert "r" in mode and not set(mode) & set("wax+"), mode
    for flags in log.flags:
        assert not flags & _WRITE_FLAGS, flags
    assert log.mmaps, "the model file was not memory-mapped"
    assert all(a == mmap.ACCESS_READ for a in log.mmaps), log.mmaps


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_open_and_load_only_read(
    tmp_path: Path, open_log: Callable[[Path], OpenLog], backend_name: str
) -> None:
    """Opening a model, loading its weights and closing it reads the file and nothing else."""
    model: LlamaModel = write_llama_gguf(tmp_path / "m.gguf")
    before = _state(model.path)
    log = open_log(model.path)
    with open_backend(model.path, backend_name, alloc_memory=True) as be:
        be.load()
    _assert_read_only(log)
    assert log.opens, "load reads the weights through open()"
    assert _state(model.path) == before


def _hostile(tmp_path: Path) -> list[tuple[Path, bool]]:
    """Files that fail at different stages, and whether decoding alone already fails."""
    blocks = RawGGUF().kv("general.architecture", V.STRING, "llama")
    blocks.kv("llama.block_count", V.UINT32, 10**8).tensor("token_embd.weight", (4,), 0)
    blocks.data = bytes(16)
    counts = RawGGUF()
    counts.n_tensors = counts.n_kv = 2**63
    array = RawGGUF().kv_raw("a", int(V.ARRAY), struct.pack("<IQ", int(V.UINT32), 2**62))
    past = RawGGUF().tensor("w", (2**20, 2**20), 0)
    return [
        (blocks.write(tmp_path / "blocks.gguf"), False),  # refused by placement
        (counts.write(tmp_path / "counts.gguf"), True),
        (array.write(tmp_path / "array.gguf"), True),
        (past.write(tmp_path / "past.gguf"), True),
    ]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_refused_files_are_untouched(
    tmp_path: Path, open_log: Callable[[Path], OpenLog], backend_name: str
) -> None:
    """A hostile file is refused after read-only access and left exactly as it was."""
    for path, decoding_fails in _hostile(tmp_path):
        before = _state(path)
        log = open_log(path)
        with pytest.raises(ModelFileError):
            open_backend(path, backend_name, alloc_memory=False)
        if decoding_fails:
            with pytest.raises(ModelFileError):
                GGUFFile(path)
        assert log.opens and all(m == "rb" for m in log.opens), log.opens
        assert all(a == mmap.ACCESS_READ for a in log.mmaps), log.mmaps
        assert _state(path) == before, path.name

"""Tests for mlplug.paths: ollama's LibOllamaPath rule and MLPLUG_LIB_PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlplug.paths import LIB_PATH_ENV, find_lib_ollama_path, lib_path


def _make(root: Path, *dirs: str) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize(
    ("os_name", "exe", "existing", "expected"),
    [
        (
            "darwin",
            "darwin-app/Ollama.app/Contents/Resources/ollama",
            "darwin-app/Ollama.app/Contents/Resources",
            "darwin-app/Ollama.app/Contents/Resources",
        ),
        ("darwin", "darwin-install/bin/ollama", "darwin-install/lib/ollama", "darwin-install/bin"),
        (
            "windows",
            "windows-release/ollama.exe",
            "windows-release/lib/ollama",
            "windows-release/lib/ollama",
        ),
        (
            "windows",
            "windows-install/bin/ollama.exe",
            "windows-install/lib/ollama",
            "windows-install/bin",
        ),
        (
            "linux",
            "linux-install/bin/ollama",
            "linux-install/lib/ollama",
            "linux-install/lib/ollama",
        ),
        ("linux", "mlx-install/bin/ollama", "mlx-install/lib/ollama", "mlx-install/lib/ollama"),
    ],
)
def test_lib_ollama_path_installs(
    tmp_path: Path, os_name: str, exe: str, existing: str, expected: str
) -> None:
    """Installed layouts resolve as v0.17.5 does (bin/ fallback where later versions differ)."""
    _make(tmp_path, existing)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    got = find_lib_ollama_path(str(tmp_path / exe), str(cwd), os_name)
    assert got == str(tmp_path / expected)


def test_lib_ollama_path_linux_dev_has_no_dist_candidate(tmp_path: Path) -> None:
    """A linux dev tree with only dist/.../lib/ollama falls back to the executable's directory."""
    _make(tmp_path, "linux-dev/dist/linux_amd64/lib/ollama")
    dev = tmp_path / "linux-dev"
    assert find_lib_ollama_path(str(dev / "ollama"), str(dev), "linux") == str(dev)


def test_lib_ollama_path_darwin_dev_prefers_exe_dir(tmp_path: Path) -> None:
    """On darwin the executable's directory exists and comes before build/lib/ollama."""
    _make(tmp_path, "darwin-dev/build/lib/ollama")
    dev = tmp_path / "darwin-dev"
    assert find_lib_ollama_path(str(dev / "ollama"), str(dev), "darwin") == str(dev)


def test_lib_ollama_path_cwd_build(tmp_path: Path) -> None:
    """With only cwd/build/lib/ollama present, that directory wins."""
    _make(tmp_path, "x", "y/build/lib/ollama")
    got = find_lib_ollama_path(str(tmp_path / "x/ollama"), str(tmp_path / "y"), "linux")
    assert got == str(tmp_path / "y/build/lib/ollama")


def test_lib_ollama_path_exe_build_beats_cwd_build(tmp_path: Path) -> None:
    """The executable-relative build directory beats the cwd one."""
    _make(tmp_path, "x/build/lib/ollama", "y/build/lib/ollama")
    got = find_lib_ollama_path(str(tmp_path / "x/ollama"), str(tmp_path / "y"), "linux")
    assert got == str(tmp_path / "x/build/lib/ollama")


def test_lib_ollama_path_unknown_exe_or_cwd(tmp_path: Path) -> None:
    """An unknown executable or working directory gives "" even when a candidate exists."""
    _make(tmp_path, "a/lib/ollama")
    assert find_lib_ollama_path(None, str(tmp_path), "linux") == ""
    assert find_lib_ollama_path(str(tmp_path / "a/bin/ollama"), None, "linux") == ""


def test_lib_ollama_path_other_os_and_fake_exists() -> None:
    """Another OS has no first candidate; the exists test is injectable and paths normalised."""
    seen: list[str] = []

    def exists(path: str) -> bool:
        seen.append(path)
        return False

    got = find_lib_ollama_path("/opt/o//bin/ollama", "/w", "plan9", exists)
    assert got == os.path.normpath("/opt/o/bin")
    assert seen == [
        os.path.normpath("/opt/o/bin/build/lib/ollama"),
        os.path.normpath("/w/build/lib/ollama"),
    ]


def test_lib_ollama_path_file_counts(tmp_path: Path) -> None:
    """Any file-system entry counts as existing, not only a directory."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/ollama").write_text("")
    got = find_lib_ollama_path(str(tmp_path / "bin/ollama"), str(tmp_path), "linux")
    assert got == str(tmp_path / "lib/ollama")


def test_lib_path_env() -> None:
    """MLPLUG_LIB_PATH splits on os.pathsep, dropping empty entries; unset gives []."""
    value = os.pathsep.join(["/a", "", "/b"])
    assert lib_path({LIB_PATH_ENV: value}) == ["/a", "/b"]
    assert lib_path({}) == []


def test_lib_path_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an argument lib_path reads the process environment."""
    monkeypatch.setenv(LIB_PATH_ENV, "/lib/mlplug")
    assert lib_path() == ["/lib/mlplug"]

"""What the loaded ggml was built with, what this CPU could use, and how to get a faster build.

The build's CPU features come from the CPU backend itself: its registry's proc address
``ggml_backend_get_features`` (the list ``GGML_CPU`` reports: ``AVX2``, ``AVX512``,
``LLAMAFILE``, ``OPENMP``, ...), else the ``ggml_cpu_has_*`` functions of ``libggml-cpu``. Both
say what the code was *compiled* for, not what the machine has. The machine's features come
from ``/proc/cpuinfo`` (Linux), else from ``sysctl`` (macOS); elsewhere they are unknown and
only the build options are compared. A feature this CPU has and the build lacks, or a missing
llamafile/OpenMP build option, makes :func:`describe` advise a native build with
:data:`NATIVE_BUILD_COMMAND`.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from mlplug.plugin_api import BuildInfo

from . import _lib
from .device import load_backends

__all__ = [
    "NATIVE_BUILD_COMMAND",
    "BuildFacts",
    "advice",
    "build_features",
    "cpu_library",
    "describe",
    "host_cpu_features",
    "parse_cpuinfo",
    "parse_sysctl",
]

#: The command that builds libggml-python from source for this machine's CPU.
NATIVE_BUILD_COMMAND: Final = (
    'CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON -DGGML_OPENMP=ON" '
    "pip install --no-binary libggml-python libggml-python"
)

#: /proc/cpuinfo flag -> the name ggml's CPU backend gives the feature (x86 ``flags``).
_X86_FLAGS: Final[dict[str, str]] = {
    "pni": "SSE3",
    "ssse3": "SSSE3",
    "avx": "AVX",
    "avx_vnni": "AVX_VNNI",
    "avx2": "AVX2",
    "f16c": "F16C",
    "fma": "FMA",
    "bmi2": "BMI2",
    "avx512f": "AVX512",
    "avx512vbmi": "AVX512_VBMI",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "amx_int8": "AMX_INT8",
}
#: The same for arm64 (``Features``).
_ARM_FLAGS: Final[dict[str, str]] = {
    "asimd": "NEON",
    "asimddp": "DOTPROD",
    "asimdhp": "FP16_VA",
    "i8mm": "MATMUL_INT8",
    "sve": "SVE",
    "sme": "SME",
}
#: macOS ``sysctl`` words (x86 ``machdep.cpu.*features``; arm64 ``hw.optional.*`` set to 1).
_SYSCTL_WORDS: Final[dict[str, str]] = {
    "SSE3": "SSE3",
    "SSSE3": "SSSE3",
    "FMA": "FMA",
    "AVX1.0": "AVX",
    "F16C": "F16C",
    "AVX2": "AVX2",
    "BMI2": "BMI2",
    "AVX512F": "AVX512",
    "AVX512VBMI": "AVX512_VBMI",
    "AVX512VNNI": "AVX512_VNNI",
    "AVX512BF16": "AVX512_BF16",
    "hw.optional.neon": "NEON",
    "hw.optional.arm.FEAT_DotProd": "DOTPROD",
    "hw.optional.arm.FEAT_FP16": "FP16_VA",
    "hw.optional.arm.FEAT_I8MM": "MATMUL_INT8",
    "hw.optional.arm.FEAT_SME": "SME",
}
_SYSCTL_NAMES: Final = ("machdep.cpu.features", "machdep.cpu.leaf7_features", "hw.optional")

#: The ``ggml_cpu_has_<x>`` functions read when the feature list is not available.
_HAS_FUNCTIONS: Final[dict[str, str]] = {
    "sse3": "SSE3",
    "ssse3": "SSSE3",
    "avx": "AVX",
    "avx_vnni": "AVX_VNNI",
    "avx2": "AVX2",
    "f16c": "F16C",
    "fma": "FMA",
    "bmi2": "BMI2",
    "avx512": "AVX512",
    "avx512_vbmi": "AVX512_VBMI",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "amx_int8": "AMX_INT8",
    "neon": "NEON",
    "dotprod": "DOTPROD",
    "fp16_va": "FP16_VA",
    "matmul_int8": "MATMUL_INT8",
    "sve": "SVE",
    "sme": "SME",
    "llamafile": "LLAMAFILE",
}
#: Build options that speed up the CPU backend whatever the CPU: llamafile's sgemm kernels and
#: OpenMP threads (OpenMP counted on Linux only, where the native build command can use it).
_OPTIONS: Final = ("LLAMAFILE", "OPENMP")
_OPTION_TEXT: Final = {"LLAMAFILE": "llamafile's sgemm kernels", "OPENMP": "OpenMP threads"}

_LAYOUT_TEXT: Final = {
    _lib.LAYOUT_ENV: f"{_lib.ENV_LIB}",
    _lib.LAYOUT_SOURCE: "libggml-python source build, lib/",
    _lib.LAYOUT_WHEEL: "libggml-python generic wheel, lib64/",
}


def parse_cpuinfo(text: str) -> frozenset[str]:
    """Return the ggml names of the CPU features a ``/proc/cpuinfo`` text lists.

    Reads the first ``flags`` (x86) or ``Features`` (arm64) line; flags ggml has no code for
    are left out.
    """
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("flags", "features"):
            continue
        flags = set(rest.split())
        table = _X86_FLAGS if key == "flags" else _ARM_FLAGS
        return frozenset(name for flag, name in table.items() if flag in flags)
    return frozenset()


def parse_sysctl(text: str) -> frozenset[str]:
    """Return the ggml names of the CPU features in macOS ``sysctl`` output.

    x86: the words of ``machdep.cpu.features`` / ``machdep.cpu.leaf7_features``; arm64: the
    ``hw.optional...`` names whose value is 1.
    """
    found: set[str] = set()
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key.startswith("machdep.cpu."):
            found.update(_SYSCTL_WORDS[w] for w in rest.split() if w in _SYSCTL_WORDS)
        elif key in _SYSCTL_WORDS and rest.strip() == "1":
            found.add(_SYSCTL_WORDS[key])
    return frozenset(found)


def _sysctl() -> str:
    try:
        proc = subprocess.run(
            ["sysctl", *_SYSCTL_NAMES], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout


def host_cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """Return the ggml names of this machine's CPU features, or None where they are unknown.

    :param cpuinfo: the file to read (Linux's ``/proc/cpuinfo``); without it, on macOS,
        ``sysctl`` is asked.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        found = parse_sysctl(_sysctl()) if sys.platform == "darwin" else frozenset()
        return found or None
    found = parse_cpuinfo(text)
    return found or None


def _is_on(value: str) -> bool:
    return value.strip() not in ("", "0")


def build_features(lib: _lib.Lib) -> tuple[dict[str, str], bool]:
    """Return the CPU backend's build features and whether the list is complete.

    Complete: the backend's own list (a feature absent from it was not compiled in). Otherwise
    the ``ggml_cpu_has_*`` answers ("1"/"0") for the functions the build exports, which say
    nothing about OpenMP.
    """
    dev = lib.ggml_backend_dev_by_type(_lib.GGML_BACKEND_DEVICE_TYPE_CPU)
    reg = lib.ggml_backend_dev_backend_reg(dev) if dev else None
    addr = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features") if reg else None
    if addr:
        items = _lib.GetFeaturesFn(addr)(reg)
        out: dict[str, str] = {}
        i = 0
        while items and items[i].name:
            out[items[i].name.decode(errors="replace")] = (items[i].value or b"").decode(
                errors="replace"
            )
            i += 1
        return out, True
    out = {}
    for suffix, name in _HAS_FUNCTIONS.items():
        fn = lib.symbol(f"ggml_cpu_has_{suffix}")
        if fn is None:
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = ()
        out[name] = str(int(fn()))
    return out, False


def cpu_library(lib: _lib.Lib, maps: str | Path = "/proc/self/maps") -> str:
    """Return the path of the CPU backend library in use ("" when it is part of libggml).

    A ``GGML_BACKEND_DL`` build loads the best of its variants (``libggml-cpu-haswell.so``,
    ...); the one mapped into this process is it. Elsewhere, the ``libggml-cpu`` opened with
    libggml.
    """
    try:
        text = Path(maps).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5].strip() if len(fields) == 6 else ""
        if Path(path).name.startswith("libggml-cpu"):
            return path
    for opened in lib.paths:
        if opened.name.startswith("libggml-cpu"):
            return str(opened)
    return ""


class BuildFacts:
    """The facts :func:`advice` weighs: build features, host features, where the build is from.

    :param features: the build's features (name -> value; "0" or "" = off).
    :param complete: whether ``features`` lists every feature compiled in (absent = off).
    :param host: the ggml names of the CPU's features, or None where unknown.
    :param layout: ``_lib.LAYOUT_*``.
    :param linux: whether OpenMP counts as a missing option (the native command needs it).
    """

    def __init__(
        self,
        features: Mapping[str, str],
        complete: bool,
        host: Iterable[str] | None,
        layout: str,
        *,
        linux: bool = True,
    ) -> None:
        self.features = dict(features)
        self.complete = complete
        self.host = None if host is None else frozenset(host)
        self.layout = layout
        self.linux = linux

    @property
    def enabled(self) -> list[str]:
        """The features compiled in, in the order the build lists them."""
        return [k for k, v in self.features.items() if _is_on(v)]

    @property
    def missing_cpu_features(self) -> list[str]:
        """CPU features this machine has that the build was not compiled for (sorted)."""
        if self.host is None:
            return []
        on = set(self.enabled)
        return sorted(f for f in self.host if f not in on)

    @property
    def missing_options(self) -> list[str]:
        """Build options (llamafile, OpenMP) known to be off in this build."""
        out = []
        for option in _OPTIONS:
            if option == "OPENMP" and not self.linux:
                continue
            known = self.complete or option in self.features
            if known and not _is_on(self.features.get(option, "")):
                out.append(option)
        return out


def advice(facts: BuildFacts) -> tuple[str, str]:
    """Return ``(advice, command)``: why a native build would be faster, and the command; or
    ``("", "")`` when the loaded build already uses what this CPU offers."""
    cpu, options = facts.missing_cpu_features, facts.missing_options
    if not cpu and not options:
        return "", ""
    parts = []
    if cpu:
        parts.append(f"this CPU has {' '.join(cpu)}, which the loaded ggml was not built for")
    if options:
        what = " and ".join(_OPTION_TEXT[o] for o in options)
        parts.append(f"the loaded ggml was built without {what}")
    text = "; ".join(parts) + "."
    if facts.layout == _lib.LAYOUT_ENV:
        text += (
            f" Rebuild the ggml {_lib.ENV_LIB} names with -DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON"
            f" -DGGML_OPENMP=ON, or unset {_lib.ENV_LIB} and build libggml-python natively."
        )
    else:
        text += " A native build of libggml-python uses them."
    return text, NATIVE_BUILD_COMMAND


def describe() -> BuildInfo:
    """Describe the loaded ggml: library file and layout, CPU backend and its features, the
    machine's CPU features, and advice when a native build would be faster.

    :raises BackendLoadError: the library could not be loaded.
    """
    lib = load_backends()
    features, complete = build_features(lib)
    host = host_cpu_features()
    facts = BuildFacts(features, complete, host, lib.layout, linux=sys.platform.startswith("linux"))
    text, command = advice(facts)
    library = str(lib.paths[-1])
    cpu_lib = cpu_library(lib)
    where = _LAYOUT_TEXT.get(lib.layout, "unknown origin")
    cpu_name = Path(cpu_lib).name if cpu_lib else "built into libggml"
    summary = (
        f"ggml {lib.version} from {library} ({where}); CPU backend {cpu_name}: "
        f"{' '.join(facts.enabled) or 'no SIMD features'}"
    )
    details: dict[str, Any] = {
        "version": lib.version,
        "commit": lib.commit,
        "library": library,
        "directory": str(lib.directory),
        "layout": lib.layout,
        "cpu_library": cpu_lib,
        "cpu_features": features,
        "host_cpu_features": None if host is None else sorted(host),
        "missing_cpu_features": facts.missing_cpu_features,
        "missing_build_options": facts.missing_options,
    }
    return BuildInfo(summary=summary, advice=text, command=command, details=details)

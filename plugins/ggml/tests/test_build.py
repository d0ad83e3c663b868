"""The ggml build a user runs: where the library is found, what it was built with, and the
advice ``mlplug backends``/``devices`` give when this CPU could use a faster build."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mlplug_ggml")

from mlplug.errors import BackendLoadError
from mlplug.plugin_api import BuildInfo

from mlplug_ggml import _lib, build

ROOT = Path(__file__).resolve().parents[3]

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 pni ssse3 fma f16c avx avx2 bmi2 avx512f avx512vbmi avx512_vnni sha_ni
processor\t: 1
flags\t\t: fpu
"""
ARM_CPUINFO = """\
processor\t: 0
Features\t: fp asimd evtstrm aes crc32 asimdhp asimddp i8mm sve
CPU implementer\t: 0x41
"""
#: What libggml-python's generic x86-64 wheel reports (ggml_backend_get_features).
WHEEL_FEATURES = {
    "SSE3": "1",
    "SSSE3": "1",
    "AVX": "1",
    "AVX2": "1",
    "F16C": "1",
    "FMA": "1",
    "BMI2": "1",
    "REPACK": "1",
}
#: What a native build on an AVX-512 machine reports.
NATIVE_FEATURES = {
    **WHEEL_FEATURES,
    "AVX512": "1",
    "AVX512_VBMI": "1",
    "AVX512_VNNI": "1",
    "LLAMAFILE": "1",
    "OPENMP": "1",
}


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter seeing core/ and this plugin (first on the path)."""
    full_env = {k: v for k, v in os.environ.items() if k != _lib.ENV_LIB}
    paths = [env.pop("FIRST_PATH", ""), str(ROOT / "core"), str(ROOT / "plugins" / "ggml")]
    paths.append(full_env.get("PYTHONPATH", ""))
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- this CPU ------------------------------------------------------------------------------------


def test_cpuinfo_flags_become_ggml_feature_names() -> None:
    """x86 ``flags`` and arm64 ``Features`` map to ggml's names; flags ggml ignores are dropped."""
    assert build.parse_cpuinfo(X86_CPUINFO) == {
        "SSE3",
        "SSSE3",
        "FMA",
        "F16C",
        "AVX",
        "AVX2",
        "BMI2",
        "AVX512",
        "AVX512_VBMI",
        "AVX512_VNNI",
    }
    assert build.parse_cpuinfo(ARM_CPUINFO) == {"NEON", "FP16_VA", "DOTPROD", "MATMUL_INT8", "SVE"}
    assert build.parse_cpuinfo("processor : 0\n") == frozenset()


def test_macos_sysctl_output_becomes_ggml_feature_names() -> None:
    """macOS: x86 feature words and arm64 ``hw.optional`` flags set to 1 are read."""
    intel = (
        "machdep.cpu.features: FPU SSE3 SSSE3 FMA SSE4.2 AVX1.0 F16C\n"
        "machdep.cpu.leaf7_features: BMI1 AVX2 BMI2 AVX512F AVX512VNNI\n"
    )
    assert build.parse_sysctl(intel) == {
        "SSE3",
        "SSSE3",
        "FMA",
        "AVX",
        "F16C",
        "AVX2",
        "BMI2",
        "AVX512",
        "AVX512_VNNI",
    }
    apple = (
        "hw.optional.neon: 1\nhw.optional.arm.FEAT_DotProd: 1\n"
        "hw.optional.arm.FEAT_I8MM: 1\nhw.optional.arm.FEAT_SME: 0\n"
    )
    assert build.parse_sysctl(apple) == {"NEON", "DOTPROD", "MATMUL_INT8"}


def test_host_features_unknown_without_cpuinfo(tmp_path: Path) -> None:
    """No readable cpuinfo (and not macOS) or one without flags: the features are unknown."""
    if sys.platform == "darwin":
        pytest.skip("macOS asks sysctl instead")
    assert build.host_cpu_features(tmp_path / "missing") is None
    (tmp_path / "cpuinfo").write_text("processor : 0\n")
    assert build.host_cpu_features(tmp_path / "cpuinfo") is None
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO)
    assert "AVX512" in (build.host_cpu_features(tmp_path / "cpuinfo") or ())


# -- the advice ----------------------------------------------------------------------------------


def test_generic_wheel_on_an_avx512_cpu_gets_the_native_build_command() -> None:
    """The wheel lacks AVX-512, llamafile and OpenMP: all three are named, with the command."""
    host = build.parse_cpuinfo(X86_CPUINFO)
    facts = build.BuildFacts(WHEEL_FEATURES, True, host, _lib.LAYOUT_WHEEL)
    assert facts.missing_cpu_features == ["AVX512", "AVX512_VBMI", "AVX512_VNNI"]
    assert facts.missing_options == ["LLAMAFILE", "OPENMP"]
    text, command = build.advice(facts)
    assert "AVX512 AVX512_VBMI AVX512_VNNI" in text
    assert "llamafile" in text and "OpenMP" in text
    assert command == (
        'CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON -DGGML_OPENMP=ON" '
        "pip install --no-binary libggml-python libggml-python"
    )


def test_native_build_gets_no_advice() -> None:
    """A build that uses every feature of the CPU and both options is left alone."""
    host = build.parse_cpuinfo(X86_CPUINFO)
    facts = build.BuildFacts(NATIVE_FEATURES, True, host, _lib.LAYOUT_SOURCE)
    assert facts.missing_cpu_features == [] and facts.missing_options == []
    assert build.advice(facts) == ("", "")


def test_wheel_on_an_avx2_cpu_is_still_told_about_llamafile_and_openmp() -> None:
    """The CPU matches the wheel, but the wheel was built without llamafile and OpenMP."""
    host = {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}
    facts = build.BuildFacts(WHEEL_FEATURES, True, host, _lib.LAYOUT_WHEEL)
    text, command = build.advice(facts)
    assert facts.missing_cpu_features == []
    assert "this CPU has" not in text and "llamafile" in text
    assert command == build.NATIVE_BUILD_COMMAND


def test_openmp_is_not_asked_of_a_non_linux_build() -> None:
    """Off Linux only llamafile counts as a missing option; unknown host features are skipped."""
    facts = build.BuildFacts(WHEEL_FEATURES, True, None, _lib.LAYOUT_WHEEL, linux=False)
    assert facts.missing_cpu_features == []
    assert facts.missing_options == ["LLAMAFILE"]


def test_incomplete_feature_list_does_not_guess() -> None:
    """From ``ggml_cpu_has_*`` answers OpenMP is unknown, so it is not reported missing."""
    answers = {**{k: "1" for k in WHEEL_FEATURES}, "AVX512": "0", "LLAMAFILE": "1"}
    facts = build.BuildFacts(answers, False, {"AVX2", "AVX512"}, _lib.LAYOUT_WHEEL)
    assert facts.missing_cpu_features == ["AVX512"]
    assert facts.missing_options == []


def test_a_build_named_by_the_variable_is_told_how_to_rebuild_it() -> None:
    """With MLPLUG_GGML_LIB the advice names the variable and the CMake options."""
    facts = build.BuildFacts(WHEEL_FEATURES, True, {"AVX512"}, _lib.LAYOUT_ENV)
    text, command = build.advice(facts)
    assert "MLPLUG_GGML_LIB" in text and "-DGGML_NATIVE=ON" in text
    assert command == build.NATIVE_BUILD_COMMAND


# -- the loaded library --------------------------------------------------------------------------


def test_describe_reports_the_loaded_library() -> None:
    """describe(): the loaded file, its layout, the CPU backend's features, the host's."""
    lib = _lib.load()
    info = build.describe()
    assert isinstance(info, BuildInfo)
    d = info.details
    assert d["library"] == str(lib.paths[-1]) and d["version"] == lib.version
    assert d["layout"] == lib.layout
    assert lib.version in info.summary and str(lib.paths[-1]) in info.summary
    assert d["cpu_features"], "the CPU backend reported no features"
    json.dumps(info.to_json_dict())
    assert bool(info.advice) == bool(d["missing_cpu_features"] or d["missing_build_options"])
    assert bool(info.command) == bool(info.advice)


def test_feature_list_agrees_with_ggml_cpu_has_functions() -> None:
    """The registry's feature list and libggml-cpu's ``ggml_cpu_has_*`` tell the same story."""
    lib = _lib.load()
    features, complete = build.build_features(lib)
    has_avx2 = lib.symbol("ggml_cpu_has_avx2")
    if not complete or has_avx2 is None:
        pytest.skip("this ggml build has no feature list or no ggml_cpu_has_avx2")
    has_avx2.restype = ctypes.c_int
    has_avx2.argtypes = ()
    assert (features.get("AVX2") == "1") == bool(has_avx2())


def test_cpu_library_is_the_mapped_cpu_backend(tmp_path: Path) -> None:
    """The CPU backend is found in the process maps (a variant of a GGML_BACKEND_DL build)."""
    lib = _lib.load()
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /opt/ggml/lib/libggml-base.so\n"
        "7f01-7f02 r-xp 00000000 08:01 2 /opt/ggml/lib/libggml-cpu-skylakex.so\n"
    )
    assert build.cpu_library(lib, maps) == "/opt/ggml/lib/libggml-cpu-skylakex.so"
    cpu = build.cpu_library(lib)
    assert cpu == "" or Path(cpu).name.startswith("libggml-cpu")


def test_cli_shows_the_ggml_build() -> None:
    """``mlplug devices --backend ggml``: the build's JSON record and the text block."""
    lib = _lib.load()
    proc = _python(
        "from mlplug.cli import main; raise SystemExit(main(['devices', '--backend', 'ggml', "
        "'--json']))",
        MLPLUG_PLUGINS="ggml",
    )
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert records and all(r["plugin"] == "ggml" for r in records)
    details = records[0]["build"]["details"]
    assert details["library"] == str(lib.paths[-1])
    assert set(details) >= {
        "version",
        "library",
        "layout",
        "cpu_library",
        "cpu_features",
        "host_cpu_features",
        "missing_cpu_features",
        "missing_build_options",
    }
    text = _python("from mlplug.cli import main; main(['backends'])", MLPLUG_PLUGINS="ggml")
    assert text.returncode == 0, text.stderr
    assert f"ggml: ggml {lib.version} from {lib.paths[-1]}" in text.stdout
    if records[0]["build"]["advice"]:
        assert build.NATIVE_BUILD_COMMAND in text.stdout


# -- where the library is found ------------------------------------------------------------------


def _fake_package(root: Path, *subdirs: str, versioned: bool = False) -> Path:
    """Write an importable ``libggml`` package with empty library files in ``subdirs``."""
    pkg = root / "libggml"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    name = "libggml.so.0" if versioned else "libggml.so"
    for sub in subdirs:
        (pkg / sub).mkdir()
        (pkg / sub / name).write_bytes(b"")
    return pkg


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on sys.path, with no MLPLUG_GGML_LIB and no imported libggml."""
    monkeypatch.delenv(_lib.ENV_LIB, raising=False)
    monkeypatch.delitem(sys.modules, "libggml", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_wheel_layout_lib64_is_found(fake_site: Path) -> None:
    """libggml-python's binary wheel keeps its libraries in ``libggml/lib64/``."""
    pkg = _fake_package(fake_site, "lib64")
    assert _lib.locate() == (pkg / "lib64", pkg / "lib64" / "libggml.so", _lib.LAYOUT_WHEEL)


def test_source_layout_lib_is_found_and_wins(fake_site: Path) -> None:
    """A source (sdist) build installs into ``libggml/lib/``, preferred over ``lib64/``."""
    pkg = _fake_package(fake_site, "lib", "lib64")
    assert _lib.locate() == (pkg / "lib", pkg / "lib" / "libggml.so", _lib.LAYOUT_SOURCE)
    assert _lib.find_library() == (pkg / "lib", pkg / "lib" / "libggml.so")


def test_versioned_library_only_is_found(fake_site: Path) -> None:
    """A layout holding only ``libggml.so.0`` (no unversioned link) is still found."""
    pkg = _fake_package(fake_site, "lib", versioned=True)
    assert _lib.locate()[1] == pkg / "lib" / "libggml.so.0"


def test_package_without_libraries_names_both_folders(fake_site: Path) -> None:
    """A libggml package with neither folder is a BackendLoadError naming where it looked."""
    pkg = _fake_package(fake_site)
    with pytest.raises(BackendLoadError, match=r"lib or .*lib64") as err:
        _lib.locate()
    assert str(pkg) in str(err.value)


def test_a_source_build_layout_loads_and_is_reported(tmp_path: Path) -> None:
    """The real libraries laid out as a source build (``lib/``) load and say so."""
    lib = _lib.load()
    if lib.layout == _lib.LAYOUT_ENV:
        pytest.skip("the tests run on a library named by MLPLUG_GGML_LIB")
    pkg = tmp_path / "libggml"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for path in lib.directory.iterdir():
        if path.name.startswith("libggml"):
            (pkg / "lib" / path.name).symlink_to(path)
    proc = _python(
        """
        from mlplug_ggml import _lib, build
        lib = _lib.load()
        print(lib.layout, lib.directory)
        print(build.describe().summary)
        """,
        FIRST_PATH=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    first, summary = proc.stdout.splitlines()[:2]
    assert first == f"{_lib.LAYOUT_SOURCE} {pkg / 'lib'}"
    assert "libggml-python source build, lib/" in summary

"""The C binding layer: loading, struct layout, devices, the stream, leaf storage, quantiser."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlplug_ggml")

from mlplug import BackendParams, DType, new_backend
from mlplug.errors import BackendLoadError

from mlplug_ggml import _lib, device
from mlplug_ggml import _runtime as rt
from mlplug_ggml._arena import LeafArena

ROOT = Path(__file__).resolve().parents[3]
GGML_OP_ADD = 2  # enum ggml_op: NONE, DUP, ADD, ...
GGML_TENSOR_FLAG_INPUT = 1
GGML_TENSOR_FLAG_OUTPUT = 2


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that sees core/ and this plugin."""
    full_env = dict(os.environ)
    paths = [str(ROOT / "core"), str(ROOT / "plugins" / "ggml")]
    if full_env.get("PYTHONPATH"):
        paths.append(full_env["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    full_env.pop(_lib.ENV_LIB, None)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def lib() -> _lib.Lib:
    """The loaded library."""
    return _lib.load()


@pytest.fixture
def cpu() -> Iterator[rt.Backend]:
    """The plugin's CPU stream with two threads, freed after the test."""
    be = rt.Backend(device.cpu_device(), n_threads=2)
    yield be
    be.free()


@pytest.fixture
def arena(cpu: rt.Backend) -> Iterator[LeafArena]:
    """The plugin's leaf storage on the CPU buffer type, freed after the test."""
    a = LeafArena(_lib.load(), cpu.buffer_type)
    yield a
    a.free()


@pytest.fixture
def meta(lib: _lib.Lib) -> Iterator[int]:
    """A small no-alloc ggml context for op metadata (what graphs are built in)."""
    params = _lib.GGMLInitParams(
        mem_size=8 * lib.ggml_tensor_overhead(), mem_buffer=None, no_alloc=True
    )
    ctx = lib.ggml_init(params)
    assert ctx
    yield ctx
    lib.ggml_free(ctx)


def test_import_does_not_load_the_library() -> None:
    """Importing the package and its plugin module opens no ggml shared library."""
    proc = _run_python(
        """
        import os
        import mlplug_ggml, mlplug_ggml.plugin
        from mlplug_ggml import _lib
        maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
        assert not _lib.is_loaded()
        assert "libggml" not in maps, "a ggml library is mapped"
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_library_loads_and_reports_version(lib: _lib.Lib) -> None:
    """The library opens, reports a version at least the minimum, and a commit."""
    assert _lib.is_loaded()
    assert lib.version_tuple >= _lib.MIN_GGML_VERSION
    assert lib.version.startswith(".".join(map(str, lib.version_tuple[:2])))
    assert isinstance(lib.commit, str)
    assert all(p.is_file() for p in lib.paths)
    assert lib.paths[-1].name.startswith("libggml")


def test_tensor_struct_matches_the_library(lib: _lib.Lib, arena: LeafArena, meta: int) -> None:
    """sizeof(ggml_tensor) and every field offset agree with what ggml writes."""
    assert ctypes.sizeof(_lib.GGMLTensor) + _lib.GGML_OBJECT_SIZE == lib.ggml_tensor_overhead()
    assert ctypes.sizeof(_lib.GGMLTensor) == 336
    a = arena.new_tensor(_lib.GGML_TYPE_F32, (5, 3, 2, 7))
    lib.ggml_set_name(a, b"a_tensor")
    s = _lib.GGMLTensor.at(a)
    assert s.type == _lib.GGML_TYPE_F32
    assert tuple(s.ne) == (5, 3, 2, 7)
    assert tuple(s.nb) == (4, 20, 60, 120)
    assert lib.ggml_nbytes(a) == 5 * 3 * 2 * 7 * 4
    assert s.name == b"a_tensor" == lib.ggml_get_name(a)
    assert not s.data and not s.buffer and not s.view_src and not s.extra
    b = arena.new_tensor(_lib.GGML_TYPE_F32, (5, 3, 2, 7))
    c = lib.ggml_add(meta, a, b)
    sc = _lib.GGMLTensor.at(c)
    assert sc.op == GGML_OP_ADD
    assert sc.src[0] == a and sc.src[1] == b and not sc.src[2]
    v = lib.ggml_view_1d(meta, a, 4, 8)
    sv = _lib.GGMLTensor.at(v)
    assert sv.view_src == a and sv.view_offs == 8
    assert sv.op_params[0] == 8  # views keep their byte offset in op_params
    lib.ggml_set_input(a)
    lib.ggml_set_output(b)
    assert s.flags & GGML_TENSOR_FLAG_INPUT
    assert _lib.GGMLTensor.at(b).flags & GGML_TENSOR_FLAG_OUTPUT
    q = arena.new_tensor(_lib.GGML_TYPE_Q8_0, (64, 2, 1, 1))
    assert tuple(_lib.GGMLTensor.at(q).nb[:2]) == (34, 68)
    arena.allocate(a)
    assert s.buffer and s.data


def test_arena_places_small_tensors_together_and_round_trips(
    lib: _lib.Lib, cpu: rt.Backend, arena: LeafArena
) -> None:
    """Small leaves share one aligned chunk, a large one gets its own buffer; bytes round-trip
    through ggml_backend_tensor_set/get, and free() releases everything (twice is harmless)."""
    small = [arena.new_tensor(_lib.GGML_TYPE_F32, (3, 1, 1, 1)) for _ in range(3)]
    for t in small:
        arena.allocate(t)
    held = arena.nbytes
    bufs = {_lib.GGMLTensor.at(t).buffer for t in small}
    assert len(bufs) == 1 and held > 0
    datas = [_lib.GGMLTensor.at(t).data for t in small]
    align = lib.ggml_backend_buft_get_alignment(cpu.buffer_type)
    assert all(d % align == 0 for d in datas) and len(set(datas)) == 3
    big = arena.new_tensor(_lib.GGML_TYPE_F32, (1 << 18, 1, 1, 1))  # 1 MiB: its own buffer
    arena.allocate(big)
    assert arena.nbytes >= held + (1 << 20)
    values = np.arange(3, dtype=np.float32) + 0.5
    lib.ggml_backend_tensor_set(small[1], values.ctypes.data, 0, values.nbytes)
    out = np.zeros(3, dtype=np.float32)
    lib.ggml_backend_tensor_get(small[1], out.ctypes.data, 0, out.nbytes)
    np.testing.assert_array_equal(out, values)
    arena.free()
    arena.free()
    assert arena.nbytes == 0


def test_devices_enumerate() -> None:
    """The CPU device is listed with real memory figures and its library is 'cpu'."""
    devs = device.devices()
    cpus = [d for d in devs if d.type == "CPU"]
    assert cpus, devs
    cpu = cpus[0]
    assert cpu.library == "cpu" and cpu.name and cpu.dev
    assert cpu.total_memory > 0 and 0 < cpu.free_memory <= cpu.total_memory
    assert cpu.library_path == [str(_lib.load().directory)]
    free, total = device.device_memory(cpu.dev)
    assert total > 0 and free > 0
    for d in devs:
        assert d.type in ("CPU", "GPU", "IGPU", "ACCEL", "META")
        assert d.library, d
    assert device.cpu_device().dev == cpu.dev
    assert len(device.devices()) == len(devs)  # loading backends twice adds nothing


def test_system_memory() -> None:
    """The /proc/meminfo fallback reads plausible numbers on Linux."""
    free, total = device.system_memory()
    if Path("/proc/meminfo").exists():
        assert 0 < free <= total


def test_q8_0_weights(lib: _lib.Lib) -> None:
    """A q8_0 weight made with ggml_quantize_chunk multiplies close to the F32 result."""
    k, m = 64, 3
    rng = np.random.default_rng(0)
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal(k).astype(np.float32)
    q = np.empty(lib.ggml_row_size(_lib.GGML_TYPE_Q8_0, k) * m, dtype=np.uint8)
    fp = ctypes.POINTER(ctypes.c_float)
    written = lib.ggml_quantize_chunk(
        _lib.GGML_TYPE_Q8_0, w.ctypes.data_as(fp), q.ctypes.data, 0, m, k, None
    )
    assert written == q.nbytes
    with new_backend(None, BackendParams(num_threads=2), backend="ggml") as be:
        with be.new_context() as ctx:
            tw = ctx.from_bytes(DType.Q8_0, q.tobytes(), k, m)
            y = tw.mulmat(ctx, ctx.from_floats(x, k, 1))
            ctx.compute(y)
            got = y.floats()
    np.testing.assert_allclose(got, w @ x, rtol=0.05, atol=0.05)


def test_free_twice_and_use_after_free() -> None:
    """Freeing the stream is idempotent; using it afterwards raises instead of crashing."""
    be = rt.Backend(device.cpu_device())
    assert be.buffer_type
    be.free()
    be.free()
    assert be.ptr is None
    with pytest.raises(ValueError, match="already freed"):
        be.set_n_threads(1)
    with pytest.raises(ValueError, match="already freed"):
        _ = be.buffer_type


def test_cpu_threads(cpu: rt.Backend) -> None:
    """The CPU backend takes a thread count, at least 1."""
    assert cpu.supports_threads and cpu.n_threads == 2
    assert cpu.set_n_threads(1) and cpu.n_threads == 1
    with pytest.raises(ValueError, match=">= 1"):
        cpu.set_n_threads(0)


def test_missing_library_raises_backend_load_error() -> None:
    """MLPLUG_GGML_LIB pointing nowhere gives BackendLoadError naming the variable."""
    proc = _run_python(
        """
        from mlplug.errors import BackendLoadError
        from mlplug_ggml import device
        try:
            device.devices()
        except BackendLoadError as exc:
            print("BackendLoadError:", exc)
        """,
        MLPLUG_GGML_LIB="/nonexistent",
    )
    assert proc.returncode == 0, proc.stderr
    assert "BackendLoadError:" in proc.stdout
    assert "MLPLUG_GGML_LIB" in proc.stdout and "/nonexistent" in proc.stdout


def test_directory_without_library(tmp_path: Path) -> None:
    """A directory with no libggml in it is refused with a clear reason."""
    proc = _run_python(
        """
        from mlplug_ggml import _lib
        try:
            _lib.load()
        except Exception as exc:
            print(type(exc).__name__, exc)
        """,
        MLPLUG_GGML_LIB=str(tmp_path),
    )
    assert proc.stdout.startswith("BackendLoadError"), proc.stdout + proc.stderr
    assert "has no" in proc.stdout


def test_env_var_selects_a_library_file(lib: _lib.Lib) -> None:
    """MLPLUG_GGML_LIB may name the libggml file itself."""
    proc = _run_python(
        """
        from mlplug_ggml import _lib, device
        print(_lib.load().directory, len(device.devices()))
        """,
        MLPLUG_GGML_LIB=str(lib.paths[-1]),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == str(lib.directory)


def test_find_library_raises_for_missing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery alone (no dlopen) reports a missing path as BackendLoadError."""
    monkeypatch.setenv(_lib.ENV_LIB, "/nonexistent/libggml.so")
    with pytest.raises(BackendLoadError, match="no such file"):
        _lib.find_library()


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ("_lib.MIN_GGML_VERSION = (99, 0, 0)", "needs ggml >= 99.0.0"),
        ("_lib._REQUIRED['ggml_no_such_symbol'] = (None, ())", "ggml_no_such_symbol"),
        ("_lib.GGML_OBJECT_SIZE = 40", "struct ggml_tensor is"),
    ],
    ids=["version", "symbol", "struct-size"],
)
def test_incompatible_library_is_refused(patch: str, expected: str) -> None:
    """A too-old version, a missing symbol or a different tensor struct give BackendLoadError."""
    proc = _run_python(
        f"""
        from mlplug.errors import BackendLoadError
        from mlplug_ggml import _lib
        {patch}
        try:
            _lib.load()
        except BackendLoadError as exc:
            print("BackendLoadError:", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "BackendLoadError:" in proc.stdout and expected in proc.stdout, proc.stdout

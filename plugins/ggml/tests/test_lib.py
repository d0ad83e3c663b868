"""Smoke tests of the low-level ggml layer: loading, struct layout, devices, raw graphs."""

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

from mlplug.errors import BackendLoadError  # noqa: E402

from mlplug_ggml import _lib, device  # noqa: E402
from mlplug_ggml import _runtime as rt  # noqa: E402

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
    """A CPU backend with two threads, freed after the test."""
    with rt.cpu_backend(n_threads=2) as be:
        yield be


def _compute(be: rt.Backend, build: object, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Allocate ``inputs`` as F32 tensors, build ``build(lib, ctx, *tensors)``, run it."""
    lib = _lib.load()
    with rt.Context(len(inputs)) as ctx_in, rt.Context(8, 16) as ctx_g:
        tensors = [
            ctx_in.new_tensor(_lib.GGML_TYPE_F32, arr.shape[::-1], name)
            for name, arr in inputs.items()
        ]
        with ctx_in.alloc_tensors(be) as buf:
            assert buf.size > 0
            for t, arr in zip(tensors, inputs.values(), strict=True):
                rt.set_data(t, arr.astype(np.float32))
            out = build(lib, ctx_g.ptr, *tensors)  # type: ignore[operator]
            graph = ctx_g.new_graph(16).expand(out)
            with rt.GraphAllocator(be) as galloc:
                galloc.alloc(graph)
                be.compute(graph)
                return rt.get_array(out)


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


def test_tensor_struct_matches_the_library(lib: _lib.Lib) -> None:
    """sizeof(ggml_tensor) and every field offset agree with what ggml writes."""
    assert ctypes.sizeof(_lib.GGMLTensor) + _lib.GGML_OBJECT_SIZE == lib.ggml_tensor_overhead()
    assert ctypes.sizeof(_lib.GGMLTensor) == 336
    with rt.Context(8) as ctx:
        a = ctx.new_tensor(_lib.GGML_TYPE_F32, (5, 3, 2, 7), "a_tensor")
        s = _lib.GGMLTensor.at(a)
        assert s.type == _lib.GGML_TYPE_F32
        assert tuple(s.ne) == (5, 3, 2, 7)
        assert tuple(s.nb) == (4, 20, 60, 120)
        assert lib.ggml_nbytes(a) == 5 * 3 * 2 * 7 * 4
        assert s.name == b"a_tensor" == lib.ggml_get_name(a)
        assert not s.data and not s.buffer and not s.view_src and not s.extra
        b = ctx.new_tensor(_lib.GGML_TYPE_F32, (5, 3, 2, 7))
        c = lib.ggml_add(ctx.ptr, a, b)
        sc = _lib.GGMLTensor.at(c)
        assert sc.op == GGML_OP_ADD
        assert sc.src[0] == a and sc.src[1] == b and not sc.src[2]
        v = lib.ggml_view_1d(ctx.ptr, a, 4, 8)
        sv = _lib.GGMLTensor.at(v)
        assert sv.view_src == a and sv.view_offs == 8
        assert sv.op_params[0] == 8  # views keep their byte offset in op_params
        lib.ggml_set_input(a)
        lib.ggml_set_output(b)
        assert s.flags & GGML_TENSOR_FLAG_INPUT
        assert _lib.GGMLTensor.at(b).flags & GGML_TENSOR_FLAG_OUTPUT
        q = ctx.new_tensor(_lib.GGML_TYPE_Q8_0, (64, 2))
        assert tuple(_lib.GGMLTensor.at(q).nb[:2]) == (34, 68)
        with rt.cpu_backend() as be, ctx.alloc_tensors(be) as buf:
            assert s.buffer == buf.ptr and s.data
            assert sv.data == s.data + 8  # views are initialised at allocation


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


def test_add(cpu: rt.Backend) -> None:
    """A raw add of two 4-element F32 tensors."""
    a = np.array([1, 2, 3, 4], dtype=np.float32)
    b = np.array([10, 20, 30, 40], dtype=np.float32)
    out = _compute(cpu, lambda lib, ctx, x, y: lib.ggml_add(ctx, x, y), {"a": a, "b": b})
    np.testing.assert_array_equal(out, a + b)


def test_mul_mat(cpu: rt.Backend) -> None:
    """mul_mat of ggml shapes [3,2] x [3,2] gives [2,2] = [4, 10, 2, 5]."""
    a = np.arange(1, 7, dtype=np.float32).reshape(2, 3)  # ggml shape (3, 2)
    b = np.array([1, 0, 1, 0, 1, 0], dtype=np.float32).reshape(2, 3)
    out = _compute(cpu, lambda lib, ctx, x, y: lib.ggml_mul_mat(ctx, x, y), {"a": a, "b": b})
    np.testing.assert_array_equal(out, [4, 10, 2, 5])


def test_q8_0_weights(cpu: rt.Backend, lib: _lib.Lib) -> None:
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
    with rt.Context(2) as ctx_in, rt.Context(4, 8) as ctx_g:
        tw = ctx_in.new_tensor(_lib.GGML_TYPE_Q8_0, (k, m))
        tx = ctx_in.new_tensor(_lib.GGML_TYPE_F32, (k, 1))
        with ctx_in.alloc_tensors(cpu):
            rt.set_data(tw, q)
            rt.set_data(tx, x)
            out = lib.ggml_mul_mat(ctx_g.ptr, tw, tx)
            graph = ctx_g.new_graph(8).expand(out)
            with rt.GraphAllocator(cpu) as galloc:
                galloc.alloc(graph)
                cpu.compute(graph)
                got = rt.get_array(out)
    np.testing.assert_allclose(got, w @ x, rtol=0.05, atol=0.05)


def test_free_twice_and_use_after_free(lib: _lib.Lib) -> None:
    """Every free is idempotent; using a freed object raises instead of crashing."""
    be = rt.cpu_backend()
    ctx = rt.Context(2, 8)
    t = ctx.new_tensor(_lib.GGML_TYPE_F32, (4,))
    buf = ctx.alloc_tensors(be)
    galloc = rt.GraphAllocator(be)
    graph = ctx.new_graph(8)
    for obj in (galloc, buf, ctx, be):
        obj.free()
        obj.free()
        obj.close()
    assert be.ptr is None and ctx.ptr is None and buf.ptr is None and galloc.ptr is None
    with pytest.raises(ValueError, match="already freed"):
        ctx.new_tensor(_lib.GGML_TYPE_F32, (4,))
    with pytest.raises(ValueError, match="already freed"):
        graph.expand(t)
    with pytest.raises(ValueError, match="already freed"):
        be.set_n_threads(1)
    assert rt.Buffer(None).size == 0


def test_guards_against_ggml_aborts(cpu: rt.Backend) -> None:
    """Inputs that would make ggml abort the process raise Python errors instead."""
    with rt.Context(2) as ctx:
        t = ctx.new_tensor(_lib.GGML_TYPE_F32, (4,))
        with pytest.raises(ValueError, match="not allocated"):
            rt.set_data(t, np.zeros(4, dtype=np.float32))
        with pytest.raises(ValueError, match="multiple of 32"):
            ctx.new_tensor(_lib.GGML_TYPE_Q8_0, (33,))
        with pytest.raises(ValueError, match="1 to 4 dims"):
            ctx.new_tensor(_lib.GGML_TYPE_F32, (1, 1, 1, 1, 1))
        with pytest.raises(ValueError, match="unknown tensor type"):
            ctx.new_tensor(4, (4,))  # GGML_TYPE_Q4_2, removed
        with pytest.raises(ValueError, match="unknown tensor type"):
            ctx.new_tensor(_lib.GGML_TYPE_COUNT, (4,))
        with ctx.alloc_tensors(cpu):
            with pytest.raises(ValueError, match="exceeds"):
                rt.set_data(t, np.zeros(5, dtype=np.float32))
            with pytest.raises(ValueError, match="exceeds"):
                rt.get_data(t, offset=8, size=16)
            rt.set_data(t, np.array([1, 2, 3, 4], dtype=np.float32))
            rt.set_data(t, b"\x00" * 8, offset=8)
            np.testing.assert_array_equal(rt.get_array(t), [1, 2, 0, 0])
            assert rt.get_data(t, offset=4, size=4) == np.float32(2).tobytes()
        ctx.new_tensor(_lib.GGML_TYPE_F32, (4,))
        with pytest.raises(MemoryError, match="context is full"):
            ctx.new_tensor(_lib.GGML_TYPE_F32, (4,))
        with pytest.raises(MemoryError, match="context is full"):
            ctx.new_graph(8)
    with pytest.raises(ValueError, match=">= 1"):
        cpu.set_n_threads(0)


def test_cpu_threads(cpu: rt.Backend) -> None:
    """The CPU backend takes a thread count."""
    assert cpu.supports_threads
    assert cpu.set_n_threads(1) and cpu.n_threads == 1


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

"""Remote devices over ggml's RPC backend, with real ``mlplug serve`` processes on 127.0.0.1.

The client side of each check runs in its own Python process: ggml's registry of servers is
process-wide, and a lost server poisons the process that used it (by design: its remote state
is gone), so the pytest process itself never connects. Servers listen on port 0 and report the
port the kernel gave them (no free-port guessing).

Tests needing RPC skip, naming the build command, when the loaded ggml lacks it; run them with
``MLPLUG_GGML_LIB`` pointing at a ggml built with ``-DGGML_RPC=ON`` (see docs/remote-devices.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlplug_ggml")

import mlplug as ml
from mlplug.plugin_api import parse_endpoint, parse_endpoints

HERE = Path(__file__).resolve().parent
TESTS = HERE.parents[2] / "tests"
_LISTENING = re.compile(r"listening on \S+:(\d+) ")


def _has_rpc() -> bool:
    try:
        from mlplug_ggml import _lib, rpc

        return rpc.has_rpc(_lib.load())
    except ml.BackendLoadError:
        return False


def _build_command() -> str:
    from mlplug_ggml.rpc import BUILD_COMMAND

    return BUILD_COMMAND


HAS_RPC = _has_rpc()
needs_rpc = pytest.mark.skipif(
    not HAS_RPC,
    reason=(
        "the loaded ggml has no RPC backend: build one with "
        f"{_build_command()} (or point MLPLUG_GGML_LIB at such a build)"
    ),
)


def with_default_sigint() -> None:
    """A ``preexec_fn``: the server gets SIGINT's default disposition even when this suite runs
    as a background job (whose children inherit SIGINT ignored), so Ctrl-C tests test it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """A ``mlplug serve --port 0`` child process and the endpoint it reported."""

    def __init__(self, log: Path, *extra: str) -> None:
        self.log = log
        self._file = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlplug", "serve", "--port", "0", "--threads", "1", *extra],
            stdout=subprocess.DEVNULL,
            stderr=self._file,
            preexec_fn=with_default_sigint,
        )
        self.port = 0
        for _ in range(600):
            m = _LISTENING.search(log.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            self.stop()
            pytest.fail(f"mlplug serve did not start: {log.read_text(errors='replace')}")

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Signal the server and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._file.close()
        return rc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One RPC server for the module."""
    if not HAS_RPC:
        pytest.skip("the loaded ggml has no RPC backend")
    s = Server(tmp_path_factory.mktemp("rpc") / "serve.log")
    yield s
    s.stop()


def run_client(script: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``script`` in a fresh Python (tests/ on the path) and return the JSON it prints."""
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(HERE), full.get("PYTHONPATH", "")])
    full.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- endpoints (no ggml needed) ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", "empty"),
        ("localhost", "expected host:port"),
        ("host:", "port ''"),
        ("host:http", "port 'http'"),
        ("host:0", "outside 1..65535"),
        ("host:65536", "outside 1..65535"),
        ("::1:50052", "brackets"),
        ("[nothost]:1", "not an IPv6 address"),
        ("bad_host:1", "not a host name"),
    ],
)
def test_bad_endpoint_is_a_typed_error(text: str, names: str) -> None:
    """A malformed endpoint raises RemoteDeviceError naming the entry and the fault."""
    with pytest.raises(ml.RemoteDeviceError, match=re.escape(names)) as info:
        parse_endpoint(text)
    assert info.value.endpoint == text


def test_endpoint_lists() -> None:
    """Lists parse in order; the bad entry of a list is the one named; repeats are refused."""
    eps = parse_endpoints("10.0.0.2:50052, gpu-box.lan:7,[::1]:9")
    assert [str(e) for e in eps] == ["10.0.0.2:50052", "gpu-box.lan:7", "[::1]:9"]
    with pytest.raises(ml.RemoteDeviceError, match="'x:y'"):
        parse_endpoints("a:1,x:y")
    with pytest.raises(ml.RemoteDeviceError, match="listed twice"):
        parse_endpoints("a:1,a:1")
    assert ml.BackendParams(rpc_servers="a:1,b:2").rpc_servers == ("a:1", "b:2")
    with pytest.raises(ml.RemoteDeviceError, match="'a:99999'"):
        ml.BackendParams(rpc_servers=["a:99999"])


def test_probe_closed_port_and_garbage() -> None:
    """The probe turns a closed port and a server speaking something else into typed errors."""
    from mlplug_ggml.rpc import probe

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        with pytest.raises(ml.RemoteDeviceError, match="cannot reach"):
            probe(parse_endpoint(f"127.0.0.1:{port}"), timeout=5)

    def answer(listener: socket.socket, reply: bytes) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)
            conn.sendall(reply)

    for reply, message in [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a ggml RPC server"),
        ((28).to_bytes(8, "little") + bytes([9, 0, 0]) + bytes(25), "protocol 9.0.0"),
        (b"", "cannot reach"),
    ]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            t = threading.Thread(target=answer, args=(listener, reply), daemon=True)
            t.start()
            ep = parse_endpoint(f"127.0.0.1:{listener.getsockname()[1]}")
            with pytest.raises(ml.RemoteDeviceError, match=re.escape(message)):
                probe(ep, timeout=5)
            t.join(5)

    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        ep = parse_endpoint(f"127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(ml.RemoteDeviceError, match="did not answer"):
            probe(ep, timeout=0.5)


# -- mlplug serve ----------------------------------------------------------------------------
def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplug", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_serve_refuses_non_loopback_without_flag() -> None:
    """Binding beyond loopback needs --allow-remote (usage error 2, nothing served)."""
    out = _serve("--host", "0.0.0.0", "--port", "0")
    assert out.returncode == 2
    assert "refusing to bind 0.0.0.0" in out.stderr and "--allow-remote" in out.stderr
    out = _serve("--host", "not a host", "--port", "0")
    assert out.returncode == 2 and "bad RPC endpoint" in out.stderr


@pytest.mark.skipif(HAS_RPC, reason="checks the error of a ggml without RPC")
def test_serve_without_rpc_names_the_build_command() -> None:
    """A ggml without RPC: a one-line error naming the build command."""
    out = _serve("--port", "0")
    assert out.returncode == 1
    assert "has no RPC backend" in out.stderr and "-DGGML_RPC=ON" in out.stderr


@needs_rpc
def test_serve_warns_when_remote_allowed(tmp_path: Path) -> None:
    """--allow-remote with a non-loopback host prints the security warning, then serves."""
    s = Server(tmp_path / "serve.log", "--host", "0.0.0.0", "--allow-remote")
    rc = s.stop(signal.SIGTERM)
    log = s.log.read_text(errors="replace")
    assert "no authentication and no encryption" in log
    assert rc == 143


@needs_rpc
def test_serve_exit_codes(tmp_path: Path) -> None:
    """SIGINT ends the server with 130."""
    s = Server(tmp_path / "serve.log")
    assert s.stop(signal.SIGINT) == 130


# -- clients ---------------------------------------------------------------------------------
DEVICES = r"""
import json
from mlplug.registry import manager
print(json.dumps([d.model_dump(mode="json") for d in manager().get("ggml").devices()]))
"""


@needs_rpc
def test_devices_lists_remote(server: Server) -> None:
    """Remote devices: library RPC, id 0, named after the order given, with memory."""
    devs = run_client(DEVICES, env={"MLPLUG_RPC_SERVERS": server.endpoint})
    remote = [d for d in devs if d.get("Library", d.get("library")) == "RPC"]
    assert len(remote) == 1, devs
    d = remote[0]
    assert d.get("ID", d.get("id")) == "0"
    total = d.get("TotalMemory", d.get("total_memory"))
    assert isinstance(total, int) and total > 0
    assert server.endpoint in json.dumps(d)


CLOSED = r"""
import json, socket
import mlplug as ml
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    try:
        ml.new_backend(None, ml.BackendParams(rpc_servers=f"127.0.0.1:{s.getsockname()[1]}"),
                       backend="ggml")
        print(json.dumps(None))
    except ml.RemoteDeviceError as exc:
        print(json.dumps([type(exc).__name__, str(exc)]))
"""


@needs_rpc
def test_closed_port_is_a_typed_error() -> None:
    """A client pointed at a closed port gets RemoteDeviceError (no abort, no hang)."""
    got = run_client(CLOSED)
    assert got is not None and got[0] == "RemoteDeviceError" and "cannot reach" in got[1]


SPLIT = r"""
import json, sys
import numpy as np
import mlplug as ml
from mlplug.generate import open_model
from mlplug.layers import parse_gpu_layers
from mlplug.sample import SamplingParams
from rpc_models import write_full_llama

path, servers, spec = sys.argv[1:4]
write_full_llama(path)
params = ml.BackendParams(
    gpu_layers=parse_gpu_layers(spec) if spec else ml.GPULayersList(), rpc_servers=servers
)
with open_model(path, params, backend="ggml", num_ctx=32, require_tokenizer=False) as tm:
    gen = tm.generate([1, 5, 7, 3, 9], 6, SamplingParams())
    for _ in gen:
        pass
    used = [d.library for d in tm.backend.backend_devices()]
    print(json.dumps({"tokens": gen.tokens, "logits": gen.prompt_logits.tolist(), "used": used}))
"""


@needs_rpc
def test_split_llama_matches_local(server: Server, tmp_path: Path) -> None:
    """Layers 0-4 on the remote device: the same logits and tokens as the local run."""
    path = str(tmp_path / "llama6.gguf")
    local = run_client(SPLIT, path, "", "")
    split = run_client(SPLIT, path, server.endpoint, "RPC:0=0-4")
    assert split["used"] == ["RPC"]
    assert split["tokens"] == local["tokens"]
    import numpy as np

    a, b = np.array(local["logits"]), np.array(split["logits"])
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


MEMORY = r"""
import json, sys
from pathlib import Path
import mlplug as ml
from mlplug.dtypes import DType
from model_files import write_llama_gguf
from model_helpers import build_cache, build_forward, open_backend

path, servers = sys.argv[1:3]
model = write_llama_gguf(Path(path), block_count=4, n_embd=128, n_vocab=256)
layers = ml.GPULayersList([ml.GPULayers(id="0", library="RPC", layers=[0, 1])])
kw = dict(gpu_layers=layers, rpc_servers=servers)
n_vocab, n_kv = model.ne["token_embd.weight"][1], model.n_embd // 2

def run(alloc):
    be = open_backend(model.path, "ggml", alloc_memory=alloc, **kw)
    if alloc:
        be.load()
    w = be.hook_held_bytes()
    cache = build_cache(be, n_kv, 64, DType.F16)
    c = be.hook_held_bytes()
    fwd = build_forward(be, cache, 5, n_vocab)
    fwd.ctx.reserve()
    mem = be.backend_memory()
    out = {"mem": mem.model_dump(mode="json")}
    if alloc:
        before = be.hook_held_bytes()
        fwd.ctx.compute(fwd.out)
        after = be.hook_held_bytes()
        out["held"] = {"weights": w, "cache": {k: c[k] - w.get(k, 0) for k in c},
                       "graph": {k: after[k] - before.get(k, 0) for k in after}}
    fwd.close(); cache.close(); be.close()
    return out

dry = run(False)
real = run(True)
print(json.dumps({"dry": dry, "real": real}))
"""


def _estimate(mem: dict[str, Any], device: int) -> tuple[int, int, int]:
    """(weights, cache, graph) the record puts on ``device`` (-1 the CPU)."""
    cpu = mem.get("CPU", mem.get("cpu"))
    gpus = mem.get("GPUs", mem.get("gpus")) or []
    entry = cpu if device == -1 else gpus[device]

    def get(e: dict[str, Any], *names: str) -> Any:
        for n in names:
            if n in e:
                return e[n]
        raise KeyError(names)

    weights = sum(get(entry, "Weights", "weights") or [])
    if device == -1:
        weights += get(mem, "InputWeights", "input_weights")
    cache = sum(get(entry, "Cache", "cache") or [])
    graph = get(entry, "Graph", "graph")
    return weights, cache, graph


@needs_rpc
def test_memory_estimate_per_device(server: Server, tmp_path: Path) -> None:
    """Dry-run weights, cache and graph per device within 1% of what each side allocated."""
    got = run_client(MEMORY, str(tmp_path / "llama4.gguf"), server.endpoint)
    held = got["real"]["held"]
    assert got["real"]["mem"] == got["dry"]["mem"]
    for device in (-1, 0):
        est_w, est_c, est_g = _estimate(got["dry"]["mem"], device)
        key = str(device)
        real_w, real_c, real_g = (held[k].get(key, 0) for k in ("weights", "cache", "graph"))
        assert est_w > 0 and est_c > 0 and est_g > 0, (device, est_w, est_c, est_g)
        for what, est, real in (
            ("weights", est_w, real_w),
            ("cache", est_c, real_c),
            ("graph", est_g, real_g),
        ):
            assert abs(real - est) <= 0.01 * est, (device, what, est, real)


KILLED = r"""
import json, os, signal, sys, time
import mlplug as ml
from mlplug.generate import open_model
from mlplug.layers import parse_gpu_layers
from mlplug.sample import SamplingParams
from rpc_models import write_full_llama

path, servers, pid, sig = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
write_full_llama(path)
params = ml.BackendParams(gpu_layers=parse_gpu_layers("RPC:0=0-4"), rpc_servers=servers)
tm = open_model(path, params, backend="ggml", num_ctx=64, require_tokenizer=False)
gen = tm.generate([1, 2, 3], 40, SamplingParams())
start = None
try:
    for i, _ in enumerate(gen):
        if i == 2:
            os.kill(pid, sig)
            start = time.monotonic()
    print(json.dumps(None))
except ml.RemoteDeviceError as exc:
    print(json.dumps([type(exc).__name__, str(exc), time.monotonic() - start]))
"""


@needs_rpc
@pytest.mark.parametrize(
    ("sig", "reason"),
    [(signal.SIGKILL, "crashed or returned malformed response"), (signal.SIGSTOP, "within 10 s")],
)
def test_server_lost_mid_run_is_a_typed_error(tmp_path: Path, sig: int, reason: str) -> None:
    """A server killed (or stopped: it never answers) during generation: RemoteDeviceError in
    the client, which lives on to report it.

    (The 30 s bound is the issue's liveness requirement, not a speed measurement: a dead
    server's connection fails at once; a silent one hits ``MLPLUG_RPC_TIMEOUT``, 10 s here.)
    """
    s = Server(tmp_path / "serve.log")
    try:
        got = run_client(
            KILLED,
            str(tmp_path / "llama6.gguf"),
            s.endpoint,
            str(s.proc.pid),
            str(int(sig)),
            env={"MLPLUG_RPC_TIMEOUT": "10"},
        )
    finally:
        if sig == signal.SIGSTOP:
            s.proc.kill()
        s.stop()
    assert got is not None, "generation finished although the server was lost"
    assert got[0] == "RemoteDeviceError" and s.endpoint in got[1]
    assert reason in got[1]
    assert got[2] < 30


@needs_rpc
def test_conformance_on_remote_device(server: Server) -> None:
    """The whole default tier of the conformance suite, computed on the remote device (RPC0)."""
    out = subprocess.run(
        [sys.executable, "-m", "mlplug", "conformance", "-b", "ggml", "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "MLPLUG_RPC_SERVERS": server.endpoint, "MLPLUG_GGML_DEVICE": "RPC0"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"ggml: [1-9]\d* passed, 0 failed", out.stdout), out.stdout[-2000:]


@needs_rpc
def test_cli_run_and_inspect_with_remote_layers(server: Server, tmp_path: Path) -> None:
    """``mlplug run`` / ``mlplug inspect`` take ``--gpu-layers 'RPC:0=0-4'`` from the CLI."""
    path = str(tmp_path / "llama6.gguf")
    write = "import json, sys\nfrom rpc_models import write_full_llama\n"
    run_client(write + "write_full_llama(sys.argv[1]); print(json.dumps(1))", path)
    env = {**os.environ, "MLPLUG_RPC_SERVERS": server.endpoint}

    def mlplug(*args: str, remote: bool = True) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "mlplug", *args, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env if remote else dict(os.environ),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    spec = ("--gpu-layers", "RPC:0=0-4")
    info = mlplug("inspect", path, "-b", "ggml", *spec)
    text = json.dumps(info["memory"])
    assert "RPC0" in text, text
    run = ("run", path, "-b", "ggml", "--prompt-tokens", "1,5,7,3", "-n", "4")
    assert mlplug(*run, *spec)["tokens"] == mlplug(*run, remote=False)["tokens"]

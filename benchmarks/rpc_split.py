"""A model split between this process and a ggml RPC server: speed and bytes moved, vs local.

Starts two ``mlplug serve`` (127.0.0.1, port 0; ggml's server takes one client at a time) and
three client processes on the ggml backend:

* ``local``: the whole model in the client;
* ``split``: the layers of ``--split`` (default ``RPC:0=0-4``) on the server's CPU;
* ``bytes``: the same split, talking to the server through a counting TCP proxy (its own
  process, so that counting costs the client nothing; its timings are not reported).

Each client loads once and runs an untimed warm-up; then ``--repeat`` rounds time ``local`` and
``split`` in turn (alternating, so a busy host slows them alike) and the report gives medians of
prompt tokens/s (one forward pass over ``--prompt`` tokens) and decode tokens/s (``-n`` greedy
steps). The ``bytes`` client reports the bytes sent each way and the messages (writes) per phase:
load (weights uploaded), prompt, and per decode token, and the number of graph splits ggml's
scheduler made of the last decode graph (and its nodes).

Models: ``tiny`` (benchmarks/tiny_llama.py, f32, written to a temporary folder), ``gemma``
(``$MLPLUG_GEMMA3_GGUF``), or a path. Server and client use ``--threads`` threads each.

Usage::

    python benchmarks/rpc_split.py [--model tiny|gemma|PATH] [--split 'RPC:0=0-4']
        [--prompt 32] [-n 16] [--repeat 3] [--threads 1] [--json]

Needs a ggml built with RPC (``MLPLUG_GGML_LIB`` or a source build; see docs/remote-devices.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent

CLIENT = r"""
import json, sys, time
import mlplug as ml
from mlplug.layers import parse_gpu_layers
from mlplug.models import load_model

path, spec, servers, threads, n_ctx = sys.argv[1:6]
params = ml.BackendParams(
    alloc_memory=True,
    num_threads=int(threads),
    gpu_layers=parse_gpu_layers(spec) if spec else ml.GPULayersList(),
    rpc_servers=servers,
)
be = ml.new_backend(path, params, backend="ggml")
be.load()
model = load_model(be, num_ctx=int(n_ctx))
model.generate([1, 2, 3, 4, 5, 6, 7, 8], 3)  # warm-up
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get("op") == "mark":
        print(json.dumps({"ok": True}), flush=True)
        continue
    gen = model.generate(req["ids"], req["n"])
    out = {
        "prompt_tps": gen.prompt_tokens_per_s,
        "decode_tps": gen.decode_tokens_per_s,
        "tokens": gen.tokens,
    }
    if req.get("profile"):
        out["splits"] = dict(globals().get("PROFILE", {}))
    print(json.dumps(out), flush=True)
"""

# Counts scheduler splits/copies: wraps the scheduler's compute in the bytes client.
PROFILE_HOOK = r"""
PROFILE = {}
from mlplug_ggml import _lib as _l
_lib = _l.load()
_orig = _lib.ggml_backend_sched_graph_compute
def _counted(sched, graph):
    PROFILE["splits"] = int(_lib.ggml_backend_sched_get_n_splits(sched))
    PROFILE["pipeline_copies"] = int(_lib.ggml_backend_sched_get_n_copies(sched))
    PROFILE["nodes"] = int(_lib.ggml_graph_n_nodes(graph))
    return _orig(sched, graph)
_lib.ggml_backend_sched_graph_compute = _counted
"""

PROXY = r"""
import json, socket, sys, threading
target = (sys.argv[1], int(sys.argv[2]))
counts = {"up": 0, "down": 0, "up_msgs": 0, "down_msgs": 0}
lock = threading.Lock()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(json.dumps({"port": listener.getsockname()[1]}), flush=True)

def pump(src, dst, key):
    try:
        while True:
            data = src.recv(1 << 20)
            if not data:
                break
            with lock:
                counts[key] += len(data)
                counts[key + "_msgs"] += 1
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

def accept():
    while True:
        conn, _ = listener.accept()
        for s in (conn,):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = socket.create_connection(target)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(conn, up, "up"), daemon=True).start()
        threading.Thread(target=pump, args=(up, conn, "down"), daemon=True).start()

threading.Thread(target=accept, daemon=True).start()
for line in sys.stdin:
    with lock:
        print(json.dumps(counts), flush=True)
"""


class Child:
    """A child Python process answering one JSON line per request line."""

    def __init__(self, code: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def read(self) -> dict[str, Any]:
        """Read one answer."""
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            msg = f"child process ended (exit {self.proc.wait()})"
            raise RuntimeError(msg)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, **request: Any) -> dict[str, Any]:
        """Send a request and read the answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        """End the child."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(threads: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``mlplug serve --port 0`` and return it with the port it reported."""
    f = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplug", "serve", "--port", "0", "--threads", str(threads)],
        stderr=f,
    )
    for _ in range(1200):
        m = re.search(r"listening on \S+:(\d+) ", log.read_text(errors="replace"))
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    msg = f"mlplug serve did not start: {log.read_text(errors='replace')}"
    raise RuntimeError(msg)


def model_file(arg: str, tmp: Path) -> Path:
    """The model: the tiny llama (written now), Gemma 3 270M, or a path."""
    if arg == "tiny":
        sys.path.insert(0, str(HERE))
        from tiny_llama import write_tiny_llama

        return write_tiny_llama(tmp / "tiny-llama-f32.gguf", "f32")
    if arg == "gemma":
        path = os.environ.get("MLPLUG_GEMMA3_GGUF", "")
        if not path:
            msg = "--model gemma needs MLPLUG_GEMMA3_GGUF"
            raise SystemExit(msg)
        return Path(path)
    return Path(arg)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three clients against one server and return the report."""
    n_ctx = args.prompt + args.n + 8
    ids = [1 + (i * 7919) % 250 for i in range(args.prompt)]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        path = model_file(args.model, tmp)
        # ggml's RPC server serves one client at a time: one server per split client.
        server, port = start_server(args.threads, tmp / "serve.log")
        server2, port2 = start_server(args.threads, tmp / "serve2.log")
        children: list[Child] = []
        try:
            endpoint = f"127.0.0.1:{port}"
            common = (str(path), "", "", str(args.threads), str(n_ctx))
            local = Child(CLIENT, *common)
            children.append(local)
            split = Child(CLIENT, str(path), args.split, endpoint, str(args.threads), str(n_ctx))
            children.append(split)
            proxy = Child(PROXY, "127.0.0.1", str(port2))
            children.append(proxy)
            proxy_port = proxy.read()["port"]
            before_load = proxy.ask()
            counted = Child(
                PROFILE_HOOK + CLIENT,
                str(path),
                args.split,
                f"127.0.0.1:{proxy_port}",
                str(args.threads),
                str(n_ctx),
            )
            children.append(counted)
            for c in (local, split, counted):
                c.read()  # ready
            after_load = proxy.ask()
            samples: dict[str, dict[str, list[float]]] = {
                k: {"prompt": [], "decode": []} for k in ("local", "split")
            }
            tokens: dict[str, list[int]] = {}
            for r in range(args.repeat):
                for name, c in (("local", local), ("split", split)):
                    ans = c.ask(ids=ids, n=args.n + 1)
                    samples[name]["prompt"].append(ans["prompt_tps"])
                    samples[name]["decode"].append(ans["decode_tps"])
                    tokens[name] = ans["tokens"]
                loc, spl = samples["local"]["decode"][-1], samples["split"]["decode"][-1]
                print(
                    f"round {r + 1}/{args.repeat}: decode tok/s local {loc:.2f} split {spl:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
            c0 = proxy.ask()
            counted.ask(ids=ids, n=1)
            c1 = proxy.ask()
            prof = counted.ask(ids=ids, n=args.n + 1, profile=True)
            c2 = proxy.ask()
        finally:
            for c in reversed(children):  # the counted client before its proxy
                c.close()
            for srv in (server, server2):
                srv.terminate()
                srv.wait(timeout=30)

    def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: b[k] - a[k] for k in a}

    load = diff(before_load, after_load)
    prompt = diff(c0, c1)
    both = diff(c1, c2)
    decode = {k: (both[k] - prompt[k]) / args.n for k in both}
    report: dict[str, Any] = {
        "model": str(args.model),
        "split": args.split,
        "prompt_tokens": args.prompt,
        "decode_tokens": args.n,
        "threads": args.threads,
        "repeat": args.repeat,
        "local": {k: statistics.median(v) for k, v in samples["local"].items()},
        "split_run": {k: statistics.median(v) for k, v in samples["split"].items()},
        "runs": samples,
        "same_tokens": tokens["local"] == tokens["split"],
        "bytes": {"load": load, "prompt": prompt, "decode_per_token": decode},
        "last_decode_graph": prof.get("splits", {}),
    }
    return report


def print_report(r: dict[str, Any]) -> None:
    """Print the report as text."""
    loc, spl = r["local"], r["split_run"]
    print(
        f"{r['model']}: {r['split']}, {r['prompt_tokens']} prompt tokens, {r['decode_tokens']} "
        f"decode steps, {r['threads']} thread(s) each side, median of {r['repeat']} rounds"
    )
    print(f"{'':8} {'prompt tok/s':>12} {'decode tok/s':>12}")
    print(f"{'local':8} {loc['prompt']:12.2f} {loc['decode']:12.2f}")
    print(f"{'split':8} {spl['prompt']:12.2f} {spl['decode']:12.2f}")
    print(
        f"split/local: prompt {spl['prompt'] / loc['prompt']:.2f}x, "
        f"decode {spl['decode'] / loc['decode']:.2f}x; same greedy tokens: {r['same_tokens']}"
    )
    b = r["bytes"]
    for phase in ("load", "prompt", "decode_per_token"):
        v = b[phase]
        print(
            f"bytes {phase:17} client->server {v['up']:>12,.0f} ({v['up_msgs']:,.0f} writes)  "
            f"server->client {v['down']:>12,.0f} ({v['down_msgs']:,.0f} writes)"
        )
    if r["last_decode_graph"]:
        print(f"last decode graph: {r['last_decode_graph']}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny, gemma or a GGUF path (default tiny)")
    p.add_argument("--split", default="RPC:0=0-4", help="layers on the server (RPC:0=0-4)")
    p.add_argument("--prompt", type=int, default=32, help="prompt tokens (32)")
    p.add_argument("-n", type=int, default=16, help="decode steps (16)")
    p.add_argument("--repeat", type=int, default=3, help="alternating rounds (3)")
    p.add_argument("--threads", type=int, default=1, help="threads per side (1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

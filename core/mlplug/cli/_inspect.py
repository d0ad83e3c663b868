"""``mlplug inspect MODEL.gguf``: metadata, tensors and a dry-run memory estimate."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ..errors import MlplugError
from ..memory import human_bytes2
from ._common import CommandError, UsageError, check_backend_names, dump_json, format_table, warn

if TYPE_CHECKING:
    from ..memory import BackendMemory, DeviceMemory
    from ..modelfile.reader import KV, GGUFFile, TensorInfo
    from ..params import BackendParams

__all__ = ["cmd_inspect", "describe_value", "memory_estimate", "tensor_type_name"]

#: Arrays longer than this are summarised on the terminal (``--json`` always has them whole).
ARRAY_PREVIEW: Final = 6
#: Strings longer than this are cut on the terminal.
STRING_PREVIEW: Final = 80


def tensor_type_name(info: TensorInfo) -> str:
    """Return the ggml type name of a tensor (``F32``, ``Q4_K``, ``MXFP4``...)."""
    from gguf import GGMLQuantizationType

    from ..dtypes import DType

    if info.dtype is not DType.OTHER:
        return info.dtype.name
    if info.ggml_type == 4:  # ollama's raw MXFP4 layout reuses the retired Q4_2 id
        return "MXFP4"
    try:
        return GGMLQuantizationType(info.ggml_type).name
    except ValueError:
        return f"TYPE_{info.ggml_type}"


def _value_type(kv: KV) -> str:
    name = kv.type.name.lower()
    if kv.elem_type is not None:
        return f"{name}[{kv.elem_type.name.lower()}]"
    return name


def _short(text: str) -> str:
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= STRING_PREVIEW else text[: STRING_PREVIEW - 3] + "..."


def _item(value: object, float32: bool) -> str:
    if isinstance(value, str):
        return _short(value)
    if float32 and isinstance(value, float):
        return str(np.float32(value))  # shortest text that round-trips the float32
    return str(value)


def describe_value(kv: KV) -> str:
    """Return a one-line preview of a metadata value: long arrays and strings are shortened."""
    from ..modelfile.reader import GGUFValueType

    value = kv.to_python()
    f32 = GGUFValueType.FLOAT32 in (kv.type, kv.elem_type)
    if isinstance(value, list):
        items = [_item(v, f32) for v in value[:ARRAY_PREVIEW]]
        more = f", ... ({len(value)} items)" if len(value) > ARRAY_PREVIEW else ""
        return "[" + ", ".join(items) + more + "]"
    return _item(value, f32)


def _params(gpu_layers: str | None) -> BackendParams:
    from pydantic import ValidationError

    from ..layers import GPULayersList, parse_gpu_layers
    from ..params import BackendParams

    try:
        layers = parse_gpu_layers(gpu_layers) if gpu_layers else GPULayersList()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        return BackendParams(alloc_memory=False, gpu_layers=layers)
    except ValidationError as exc:
        msg = f"invalid --gpu-layers: {exc.errors()[0]['msg']}"
        raise UsageError(msg) from exc


def memory_estimate(
    path: str, backend: str | None, gpu_layers: str | None
) -> tuple[str, BackendMemory]:
    """Create a backend for ``path`` as a dry run (``alloc_memory=False``) and return its name
    and the memory it would need.

    A device named in ``gpu_layers`` that the backend does not have is reported on stderr (its
    layers stay on the CPU).

    :raises UsageError: for an unknown backend or a malformed ``gpu_layers`` spec.
    :raises MlplugError: if the backend cannot size the model.
    """
    from ..registry import manager

    params = _params(gpu_layers)
    if backend is not None:
        check_backend_names([backend])
    be = manager().new_backend(path, params, backend=backend)
    try:
        have = {(d.library.casefold(), d.id) for d in be.devices()}
        for g in params.gpu_layers:
            if (g.library.casefold(), g.id) not in have:
                warn(
                    f"backend {be.name!r} has no device {g.library}:{g.id}; "
                    f"its {len(g.layers)} layer(s) are estimated on the CPU"
                )
        return be.name, be.backend_memory()
    finally:
        be.close()


def _memory_rows(memory: BackendMemory) -> list[list[str]]:
    def row(label: str, dev: DeviceMemory, extra: int = 0) -> list[str]:
        weights = sum(dev.weights) + extra
        cache = sum(dev.cache)
        total = weights + cache + dev.graph
        return [
            label,
            human_bytes2(weights),
            human_bytes2(cache),
            human_bytes2(dev.graph),
            human_bytes2(total),
        ]

    rows = [row(g.name or f"{g.library}{g.id}", g) for g in memory.gpus]
    rows.append(row(memory.cpu.name or "CPU", memory.cpu, memory.input_weights))
    return rows


def _print_model(gguf: GGUFFile, architecture: str) -> None:
    print(
        f"{gguf.path}: GGUF v{gguf.version}, {gguf.byte_order}-endian, "
        f"{human_bytes2(gguf.file_size)}"
    )
    print(f"architecture: {architecture or '(none)'}")
    print(f"parameters:   {gguf.parameter_count:,}")
    print()
    print(f"metadata ({len(gguf.metadata)} keys)")
    rows = [[key, _value_type(kv), describe_value(kv)] for key, kv in gguf.metadata.items()]
    print(format_table(["KEY", "TYPE", "VALUE"], rows, "  "))
    print()
    types = Counter(tensor_type_name(t) for t in gguf.tensors)
    mix = ", ".join(f"{n} {name}" for name, n in types.most_common())
    total = sum(t.nbytes for t in gguf.tensors)
    print(f"tensors ({len(gguf.tensors)}: {mix}; {human_bytes2(total)})")
    rows = [
        [t.name, tensor_type_name(t), "x".join(str(d) for d in t.ne), human_bytes2(t.nbytes)]
        for t in gguf.tensors
    ]
    print(format_table(["NAME", "TYPE", "SHAPE", "BYTES"], rows, "  "))


def cmd_inspect(args: argparse.Namespace) -> int:
    """Describe a GGUF model and estimate the memory it needs."""
    from ..modelfile.reader import GGUFFile

    _params(args.gpu_layers)  # usage errors first, before any output
    if args.backend is not None:
        check_backend_names([args.backend])
    with GGUFFile(args.model) as gguf:
        arch_kv = gguf.metadata.get("general.architecture")
        architecture = str(arch_kv.value) if arch_kv is not None else ""
        data: dict[str, Any] = {
            "architecture": architecture,
            "metadata": {key: kv.to_python() for key, kv in gguf.metadata.items()},
            "tensors": [
                {
                    "name": t.name,
                    "type": tensor_type_name(t),
                    "shape": list(t.ne),
                    "bytes": t.nbytes,
                }
                for t in gguf.tensors
            ],
            "memory": None,
        }
        if not args.json:
            _print_model(gguf, architecture)
    failure = ""
    try:
        name, memory = memory_estimate(args.model, args.backend, args.gpu_layers)
    except UsageError:
        raise
    except (MlplugError, MemoryError, OSError, ValueError) as exc:
        failure = f"memory estimate failed: {exc}"
    else:
        data["memory"] = memory.model_dump(mode="json")
    if args.json:
        dump_json(data)
    elif not failure:
        print()
        print(f"memory estimate (backend {name}, dry run)")
        print(
            format_table(
                ["DEVICE", "WEIGHTS", "CACHE", "GRAPH", "TOTAL"], _memory_rows(memory), "  "
            )
        )
    if failure:
        raise CommandError(failure)
    return 0

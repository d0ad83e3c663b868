"""``mlplug backends`` and ``mlplug devices``: installed plugins and the devices they reach."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from ..device import DeviceInfo, physical_device_key
from ..memory import human_bytes2
from ._common import check_backend_names, dump_json, format_table, warn, warn_conflicts
from ._probe import ProbeResult, enumerate_devices

__all__ = ["backend_rows", "build_lines", "cmd_backends", "cmd_devices", "device_records"]


def backend_rows(probes: dict[str, ProbeResult] | None = None) -> list[dict[str, Any]]:
    """Return one row per installed backend (and per plugin that failed before registering one).

    Keys: ``name``, ``distribution``, ``version``, ``status`` (``ok``, ``error``, or
    ``conflict``: a row per distribution claiming a name several plugins register), ``error``,
    ``devices`` (the device count; 0 unless ``status`` is ``ok``), ``build`` (what the backend's
    native library was built with, :meth:`~mlplug.plugin_api.BuildInfo.to_json_dict`; null when
    the plugin does not say or the row is not ``ok``).

    :param probes: the backends' enumeration results, when the caller has them already.
    """
    from ..registry import conflict_hint, manager

    mgr = manager()
    plugins = {p.name: p for p in mgr.plugins()}
    entries = mgr.backends()
    if probes is None:
        probes = enumerate_devices([e.name for e in entries])
    rows: list[dict[str, Any]] = []
    for entry in entries:
        plugin = plugins.get(entry.plugin)
        probe = probes[entry.name]
        if plugin is not None and plugin.status != "ok":
            status, error = "error", plugin.error
        elif not probe.ok:
            status, error = "error", f"device enumeration failed: {probe.error}"
        else:
            status, error = "ok", ""
        rows.append(
            {
                "name": entry.name,
                "distribution": entry.distribution,
                "version": entry.version,
                "status": status,
                "error": error,
                "devices": len(probe.devices) if status == "ok" else 0,
                "build": _build_json(probe) if status == "ok" else None,
            }
        )
    for name, claims in mgr.conflicts().items():
        error = f"backend name {name!r} is {conflict_hint(claims)}"
        for claim in claims:
            rows.append(
                {
                    "name": name,
                    "distribution": claim.distribution,
                    "version": claim.version,
                    "status": "conflict",
                    "error": error,
                    "devices": 0,
                    "build": None,
                }
            )
    for plugin in plugins.values():
        if plugin.backends:
            continue
        error = plugin.error if plugin.status != "ok" else "the plugin registered no backend"
        rows.append(
            {
                "name": plugin.name,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "status": "error",
                "error": error,
                "devices": 0,
                "build": None,
            }
        )
    rows.sort(key=lambda r: str(r["name"]))
    return rows


def _build_json(probe: ProbeResult) -> dict[str, Any] | None:
    return probe.build.to_json_dict() if probe.build is not None else None


def build_lines(probes: dict[str, ProbeResult]) -> list[str]:
    """The text form of each backend's build: a summary line, then the advice and the command
    that gets a faster build when the plugin says there is one. Empty when no plugin says."""
    lines: list[str] = []
    for name, probe in probes.items():
        build = probe.build
        if build is None:
            continue
        lines.append(f"{name}: {build.summary}")
        if build.advice:
            lines.append(f"  faster build available: {build.advice}")
            if build.command:
                lines.append(f"    {build.command}")
    return lines


def _warn_build_errors(probes: dict[str, ProbeResult]) -> None:
    for name, probe in probes.items():
        if probe.build_error:
            warn(f"backend {name!r} could not describe its build: {probe.build_error}")


def _print_plugin_tracebacks() -> None:
    """``--debug``: the traceback of every plugin that failed to load, on stderr."""
    from ..registry import manager

    for plugin in manager().plugins():
        if plugin.traceback:
            print(f"plugin {plugin.name!r} failed:\n{plugin.traceback}", file=sys.stderr)


def cmd_backends(args: argparse.Namespace) -> int:
    """List installed backends with their status, device count and native build."""
    from ..registry import manager

    probes = enumerate_devices([e.name for e in manager().backends()])
    rows = backend_rows(probes)
    if getattr(args, "debug", False):
        _print_plugin_tracebacks()
    _warn_build_errors(probes)
    if args.json:
        dump_json(rows)
        return 0
    if not rows:
        print("No backend plugin is installed. Install one, e.g.: pip install mlplug-cpu-numpy")
        return 0
    table = [
        [
            r["name"],
            r["distribution"] or "<in-process>",
            r["version"] or "-",
            r["status"],
            str(r["devices"]) if r["status"] == "ok" else "-",
            r["error"],
        ]
        for r in rows
    ]
    print(format_table(["NAME", "DISTRIBUTION", "VERSION", "STATUS", "DEVICES", "ERROR"], table))
    builds = build_lines({n: p for n, p in probes.items() if p.ok})
    if builds:
        print("\nBuilds:\n" + "\n".join(f"  {line}" for line in builds))
    return 0


@dataclass
class PhysicalDevice:
    """One physical device and every (backend, DeviceInfo) record that reaches it."""

    key: str
    records: list[tuple[str, DeviceInfo]] = field(default_factory=list)

    @property
    def first(self) -> DeviceInfo:
        """The record of the highest-priority backend (its name and memory are shown)."""
        return self.records[0][1]


def _group_physical(probes: dict[str, ProbeResult]) -> list[PhysicalDevice]:
    devices: dict[str, PhysicalDevice] = {}
    for name, probe in probes.items():
        for info in probe.devices:
            key = physical_device_key(info)
            devices.setdefault(key, PhysicalDevice(key)).records.append((name, info))
    return list(devices.values())


def device_records(probes: dict[str, ProbeResult]) -> list[dict[str, Any]]:
    """Return the ``--json`` records: DeviceInfo under its Go keys, plus ``plugin`` (the backend
    that reports it), ``physical_device`` (equal for records of one physical device) and
    ``build`` (what that backend's native library was built with; null when it does not say)."""
    out: list[dict[str, Any]] = []
    for name, probe in probes.items():
        for info in probe.devices:
            record = info.to_json_dict()
            record["plugin"] = name
            record["physical_device"] = physical_device_key(info)
            record["build"] = _build_json(probe)
            out.append(record)
    return out


def _memory(dev: PhysicalDevice) -> tuple[str, str]:
    """Free and total memory of a physical device: the most conservative figure any plugin gave
    (ggml, for one, reports the whole of host memory as free)."""
    frees = [i.free_memory for _, i in dev.records if i.free_memory]
    totals = [i.total_memory for _, i in dev.records if i.total_memory]
    free = human_bytes2(min(frees)) if frees else "-"
    total = human_bytes2(min(totals)) if totals else "-"
    return free, total


def _reached_by(dev: PhysicalDevice, library: str) -> str:
    parts = []
    for name, info in dev.records:
        where = info.id or "?"
        if info.library.casefold() != library.casefold():
            where = f"{info.library}/{where}"
        parts.append(f"{name}:{where}")
    return ", ".join(parts)


def _print_devices(physical: list[PhysicalDevice]) -> None:
    groups: dict[str, tuple[str, list[PhysicalDevice]]] = {}
    for dev in physical:
        library = dev.first.library or "unknown"
        groups.setdefault(library.casefold(), (library, []))[1].append(dev)
    blocks = []
    for library, devs in groups.values():
        rows = []
        for dev in devs:
            info = dev.first
            free, total = _memory(dev)
            rows.append(
                [info.name or info.id, info.description, free, total, _reached_by(dev, library)]
            )
        count = f"{len(devs)} device" + ("s" if len(devs) != 1 else "")
        table = format_table(["DEVICE", "DESCRIPTION", "FREE", "TOTAL", "BACKENDS"], rows, "  ")
        blocks.append(f"{library} ({count})\n{table}")
    print("\n\n".join(blocks))


def cmd_devices(args: argparse.Namespace) -> int:
    """List every device of every backend (or of ``--backend``), grouped by library."""
    from ..registry import manager

    explicit = bool(args.backend)
    if not explicit:
        warn_conflicts()
    names = (
        check_backend_names(args.backend) if explicit else [e.name for e in manager().backends()]
    )
    probes = enumerate_devices(names)
    failed = {n: p for n, p in probes.items() if not p.ok}
    for name, probe in failed.items():
        warn(f"backend {name!r} could not enumerate its devices: {probe.error}")
    good = {n: p for n, p in probes.items() if p.ok}
    _warn_build_errors(good)
    if args.json:
        dump_json(device_records(good))
    elif not names:
        print("No backend plugin is installed. Install one, e.g.: pip install mlplug-cpu-numpy")
    elif not any(p.devices for p in good.values()):
        print("No devices found.")
    else:
        _print_devices(_group_physical(good))
        builds = build_lines(good)
        if builds:
            print("\nBuilds:\n" + "\n".join(f"  {line}" for line in builds))
    if explicit and failed:
        return 1
    return 0

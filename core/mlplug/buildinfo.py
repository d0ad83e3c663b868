"""What a backend's native library was built with, and how to get a faster build.

A plugin registers a build describer (``register(..., build=describe)``) returning a
:class:`BuildInfo`; ``mlplug backends`` and ``mlplug devices`` show it. The core reads only
:attr:`BuildInfo.summary`, :attr:`BuildInfo.advice` and :attr:`BuildInfo.command`;
:attr:`BuildInfo.details` is the plugin's own JSON-ready record (which library file, which CPU
features, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PluginError

__all__ = ["BuildInfo"]


@dataclass(frozen=True)
class BuildInfo:
    """One backend's build: a one-line summary, advice when a faster build exists, details.

    :param summary: one line, e.g. ``ggml 0.20.2, libggml-python wheel (lib64/); CPU: AVX2 FMA``.
    :param advice: empty when the build suits this machine; otherwise one sentence saying what
        a better build would add (e.g. CPU features the loaded build does not use).
    :param command: the shell command that gets the better build (empty when ``advice`` is).
    :param details: JSON-ready facts of the plugin's choosing (strings, numbers, lists, dicts).
    :raises PluginError: a field has the wrong type, or ``details`` is not JSON-serialisable.
    """

    summary: str
    advice: str = ""
    command: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("summary", "advice", "command"):
            value = getattr(self, name)
            if not isinstance(value, str):
                msg = f"BuildInfo.{name} must be a string, got {type(value).__name__}"
                raise PluginError(msg)
        if not isinstance(self.details, Mapping):
            msg = f"BuildInfo.details must be a mapping, got {type(self.details).__name__}"
            raise PluginError(msg)
        try:
            json.dumps(dict(self.details))
        except (TypeError, ValueError) as exc:
            msg = f"BuildInfo.details must be JSON-serialisable: {exc}"
            raise PluginError(msg) from exc

    @property
    def could_be_faster(self) -> bool:
        """Whether the plugin says a faster build exists for this machine."""
        return bool(self.advice)

    def to_json_dict(self) -> dict[str, Any]:
        """Return ``{"summary", "advice", "command", "details"}`` (every key always present)."""
        return {
            "summary": self.summary,
            "advice": self.advice,
            "command": self.command,
            "details": dict(self.details),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> BuildInfo:
        """Rebuild a record written by :meth:`to_json_dict`.

        :raises PluginError: a key has the wrong type (``summary`` is required).
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("summary"), str):
            msg = "a build record needs a string 'summary'"
            raise PluginError(msg)
        return cls(
            summary=data["summary"],
            advice=data.get("advice", ""),
            command=data.get("command", ""),
            details=data.get("details", {}),
        )

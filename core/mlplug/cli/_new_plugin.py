"""``mlplug new-plugin``: write a complete, installable backend plugin distribution.

The files come from Jinja2 templates kept as package data under ``mlplug/templates/plugin``:
``package/`` becomes the plugin's package (``mlplug_NAME``), ``package/<engine>/`` adds the
engine's modules to it, ``github/`` becomes ``.github/workflows/`` and ``gitignore`` becomes
``.gitignore``; every other template keeps its path. A template's name ends in ``.j2``, which
the written file drops.

Engines: ``array`` (tensors as strided views of flat buffers, each op run eagerly by a kernel:
the numpy and torch plugins' way) and ``graph`` (the backend receives the whole graph at
compute and translates it into its own program: the ggml plugin's way).
"""

from __future__ import annotations

import argparse
import keyword
from pathlib import Path, PurePosixPath

from ._common import UsageError

__all__ = ["ENGINES", "check_plugin_name", "cmd_new_plugin", "write_plugin"]

#: The execution engines a new plugin can start from.
ENGINES = ("array", "graph")

#: The longest plugin name (the generated code stays within 100 columns).
MAX_NAME = 24


def check_plugin_name(name: str) -> None:
    """Check that ``name`` can name a backend, its package and its distribution.

    :raises UsageError: ``name`` is not a lowercase ASCII Python identifier of at most
        :data:`MAX_NAME` characters, or an installed plugin already registers that backend name.
    """
    if not (name.isascii() and name.isidentifier()) or keyword.iskeyword(name):
        msg = f"plugin name {name!r} is not a Python identifier (letters, digits, '_')"
        raise UsageError(msg)
    if name != name.lower() or name.startswith("_") or len(name) > MAX_NAME:
        msg = (
            f"plugin name {name!r} must be lowercase, not start with '_' and have at most "
            f"{MAX_NAME} characters"
        )
        raise UsageError(msg)
    from ..registry import manager

    taken = {entry.name: entry for entry in manager().backends()}
    if name in taken:
        msg = (
            f"backend name {name!r} is already taken (registered by {taken[name].owner}); "
            "choose another name"
        )
        raise UsageError(msg)


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        msg = f"--dir {str(target)!r} exists and is not a directory"
        raise UsageError(msg)
    if target.is_dir() and any(target.iterdir()):
        msg = f"--dir {str(target)!r} is not empty; choose a new or empty directory"
        raise UsageError(msg)


def _output_path(template: PurePosixPath, engine: str, package: str) -> PurePosixPath | None:
    """Return where ``template`` (relative, ``.j2``) is written, or None if not for ``engine``."""
    parts = list(template.with_suffix("").parts)
    if parts[0] == "package":
        if len(parts) > 2 and parts[1] in ENGINES:
            if parts[1] != engine:
                return None
            parts = [package, *parts[2:]]
        else:
            parts = [package, *parts[1:]]
    elif parts[0] == "github":
        parts = [".github", "workflows", *parts[1:]]
    elif parts == ["gitignore"]:
        parts = [".gitignore"]
    return PurePosixPath(*parts)


def write_plugin(name: str, target: Path, engine: str = "array") -> list[Path]:
    """Render the plugin templates for backend ``name`` into ``target``; return the files.

    :param name: the backend name (package ``mlplug_NAME``, distribution ``mlplug-NAME``).
    :param target: a new or empty directory.
    :param engine: ``"array"`` or ``"graph"``.
    :raises UsageError: a bad name, engine or target directory.
    """
    import jinja2

    check_plugin_name(name)
    if engine not in ENGINES:
        msg = f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}"
        raise UsageError(msg)
    _check_target(target)
    package = f"mlplug_{name}"
    context = {
        "name": name,
        "package": package,
        "dist": f"mlplug-{name.replace('_', '-')}",
        "cls": "".join(p.capitalize() for p in name.split("_")),
        "engine": engine,
    }
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlplug", "templates/plugin"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    written = []
    for template in sorted(env.list_templates(extensions=["j2"])):
        out = _output_path(PurePosixPath(template), engine, package)
        if out is None:
            continue
        path = target.joinpath(*out.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(context), encoding="utf-8")
        written.append(path)
    return written


def cmd_new_plugin(args: argparse.Namespace) -> int:
    """Write the plugin and print its files and the next steps; exit 0."""
    target = Path(args.dir) if args.dir else Path(args.name)
    files = write_plugin(args.name, target, args.engine)
    print(f"wrote {len(files)} files of the {args.engine}-engine plugin {args.name!r} to {target}:")
    for path in files:
        print(f"  {path.relative_to(target).as_posix()}")
    where = str(target)
    if not (target.is_absolute() or where.startswith(".")):
        where = f"./{where}"
    print(
        "next:\n"
        f"  pip install '{where}[test]'\n"
        f"  cd {target} && pytest\n"
        f"  mlplug conformance --backend {args.name}"
    )
    return 0

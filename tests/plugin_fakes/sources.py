"""Sources of misbehaving plugins, one module each (see :class:`plugin_fakes.FakeSite`)."""

from __future__ import annotations

#: The hook name misspelt (singular): pluggy knows no such hook.
MISSPELT_HOOK = """
from mlplug.hookspecs import hookimpl

@hookimpl
def mlplug_register_backend(register):
    register("misspelt", lambda path, params: "misspelt")
"""

#: The hook asks for an argument the hook specification does not have.
BAD_SIGNATURE = """
from mlplug.hookspecs import hookimpl

@hookimpl
def mlplug_register_backends(register, config):
    register("badsig", lambda path, params: "badsig")
"""

#: Registers the name of the real cpu_numpy backend.
IMPOSTOR = """
from mlplug.hookspecs import hookimpl

@hookimpl
def mlplug_register_backends(register):
    register("cpu_numpy", lambda path, params: "impostor", priority=1000)
"""

#: A working backend (its factory returns a marker string) for fallback tests.
FINE = """
from mlplug.hookspecs import hookimpl

@hookimpl
def mlplug_register_backends(register):
    register("fine", lambda path, params: "fine backend", priority=-1)
"""

#: A factory raising a plain exception, registered with the highest priority.
FACTORY_RAISES = """
from mlplug.hookspecs import hookimpl

def _factory(model_path, params):
    raise RuntimeError("the raiser factory exploded")

@hookimpl
def mlplug_register_backends(register):
    register("raiser", _factory, priority=1000)
"""

#: The hook registers one backend, then raises: nothing it registered may stay.
HOOK_RAISES = """
from mlplug.hookspecs import hookimpl

@hookimpl
def mlplug_register_backends(register):
    register("half_registered", lambda path, params: "half")
    raise ValueError("the hook gave up half-way")
"""

#: Importing the module kills the interpreter.
CRASH_AT_IMPORT = """
import os
os.abort()
"""

#: The hook kills the interpreter.
CRASH_IN_HOOK = """
import os
from mlplug.hookspecs import hookimpl

@hookimpl
def mlplug_register_backends(register):
    os.abort()
"""

#: Device enumeration hangs; it writes its pid and that of a child of its own to the file
#: named by $FAKE_HANG_PIDS first, so tests can check that none survives.
HANGING_PROBE = """
import os
import subprocess
import sys
import time

from mlplug.hookspecs import hookimpl


def _factory(model_path, params):
    return "hang backend"


def _devices():
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    path = os.environ["FAKE_HANG_PIDS"]
    with open(path + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {helper.pid}")
    os.replace(path + ".tmp", path)
    while True:
        time.sleep(1)


@hookimpl
def mlplug_register_backends(register):
    register("hang", _factory, devices=_devices)
"""

#: Importing the module never finishes.
HANG_AT_IMPORT = """
import time
while True:
    time.sleep(1)
"""

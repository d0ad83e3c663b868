"""``mlplug chat`` in a real terminal: Ctrl-C (SIGINT) stops a reply, not the program.

The command runs in a child process on a pseudo-terminal, on a tiny generated Gemma 3 file with
a vocabulary and a chat template. Its replies never end on their own before ``-n`` (the file's
end tokens are never the greedy choice), so the signal always lands during a reply. Every wait
is for output; the timeouts only guard against a hang.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from model_files import write_gemma3
from plugin_fakes import with_default_sigint

pty = pytest.importorskip("pty")  # POSIX only

#: Seconds to wait for an expected output before calling it a hang (the machine may be busy).
HANG_GUARD = 300.0
#: The CLI, as the ``mlplug`` console script runs it.
CLI = "import sys; from mlplug.cli import main; sys.exit(main())"


class Terminal:
    """The parent side of a pseudo-terminal: what the child wrote, read as it comes."""

    def __init__(self, fd: int, pid: int) -> None:
        self.fd, self.pid = fd, pid
        self.seen = bytearray()
        self.status: int | None = None

    def _more(self, deadline: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0.0))
        if not ready:
            msg = f"no output for {HANG_GUARD} s; so far: {bytes(self.seen[-2000:])!r}"
            raise AssertionError(msg)
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            msg = f"the program ended; its output: {bytes(self.seen[-2000:])!r}"
            raise AssertionError(msg)
        self.seen += data

    def wait_for(self, text: bytes, start: int = 0) -> int:
        """Read until ``text`` appears at or after offset ``start``; return the offset after it."""
        deadline = time.monotonic() + HANG_GUARD
        while (at := self.seen.find(text, start)) < 0:
            self._more(deadline)
        return at + len(text)

    def wait_for_bytes(self, offset: int) -> None:
        """Read until more than ``offset`` bytes have come."""
        deadline = time.monotonic() + HANG_GUARD
        while len(self.seen) <= offset:
            self._more(deadline)

    def type(self, keys: bytes) -> None:
        """Type ``keys`` at the terminal."""
        os.write(self.fd, keys)

    def wait_exit(self) -> int:
        """Wait for the child to exit, reading its output meanwhile; return its exit status."""
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass
        msg = f"the program did not exit; its output: {bytes(self.seen[-2000:])!r}"
        raise AssertionError(msg)

    def close(self) -> None:
        """Kill the child if it is still running, and close the terminal."""
        if self.status is None and not os.waitpid(self.pid, os.WNOHANG)[0]:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(tmp_path: Path) -> None:
    model = write_gemma3(tmp_path / "tiny-gemma3.gguf", tokenizer=True).path
    argv = [sys.executable, "-c", CLI, "chat", str(model), "-n", "100000"]
    argv += ["--num-ctx", "100000"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        try:
            with_default_sigint()  # Ctrl-C reaches it even when pytest runs in the background
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)
    term = Terminal(fd, pid)
    try:
        after = term.wait_for(b">>> ")
        term.type(b"hello\n")
        after = term.wait_for(b"hello", after)  # the terminal's echo
        term.wait_for_bytes(after + 8)  # the reply is streaming
        os.kill(pid, signal.SIGINT)  # what Ctrl-C sends
        after = term.wait_for(b"(reply stopped)", after)
        after = term.wait_for(b">>> ", after)  # the prompt again: the chat goes on
        term.type(b"\x04")  # Ctrl-D at the start of a line: end of input
        assert term.wait_exit() == 0, bytes(term.seen[-2000:])
        assert b"Traceback" not in term.seen, bytes(term.seen)
    finally:
        term.close()

"""A virtual display for the window tests, and a network link the tests can cut.

``display`` starts Xvfb (``.ci/run`` installs it on Debian; elsewhere: ``apt-get install xvfb``) on a display
number it picks itself (``-displayfd``: no clash with other runs or xdist workers), with its screen kept as
an XWD file (``-fbdir``) for screenshots; without Xvfb or tkinter every test here is skipped for that one
reason. ``Link`` is a TCP forwarder on 127.0.0.1: while it is down its port refuses connections, as an
unplugged network does, so a device behind it is offline against a server that is up.
"""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.loopback import free_port

SCREEN = (1600, 900)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Display:
    name: str
    framebuffer: Path
    """The screen as an XWD file, always current."""


@pytest.fixture(autouse=True)
def tk_freed_on_this_thread() -> Iterator[None]:
    """Free each test's Tk objects here, on the thread that made them. Tk widgets hold reference
    cycles, so the cyclic collector frees them whenever it next runs, on whatever thread allocates
    then: in a later test, a server's database thread, where Tcl aborts the whole process
    ("Tcl_AsyncDelete: async handler deleted by the wrong thread")."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Display]:
    try:
        import tkinter  # noqa: F401  (a Python built without Tk cannot run these tests either)
    except ImportError:
        pytest.skip("no display: this Python has no tkinter (Debian: apt-get install python3-tk)")
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no display: install xvfb (apt-get install xvfb; .ci/run does on Debian) to run the window tests")
    fbdir = tmp_path_factory.mktemp("xvfb")
    read, write = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-fbdir", str(fbdir),
         "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
    )
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()  # written once the server accepts clients; empty if it died
    if not number:
        error = process.communicate(timeout=10)[1].decode(errors="replace").strip().splitlines()
        pytest.skip(f"no display: Xvfb did not start ({error[-1] if error else f'exit code {process.returncode}'})")
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    try:
        yield Display(f":{number}", fbdir / "Xvfb_screen0")
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _die_with_parent() -> None:
    """Linux: Xvfb gets SIGTERM when this process ends, even if pytest is killed before its teardown
    (an interrupted xdist worker would otherwise leave it running)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Link:
    """127.0.0.1:``port`` forwards to ``target`` while up; while down nothing listens there."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("http://").partition("/")[0].partition(":")
        self.target = (host, int(port))
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def url(self, path: str = "/sync/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def up(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it (close alone may not)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

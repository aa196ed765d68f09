"""Running the studio: a folder of its own for the run's files, a free port, uvicorn until Ctrl-C.

The folder (uploads being decoded, exports being written, toy faces for the gallery) is a temporary
one, removed when the server stops however it stops. Importing this module needs the `studio` extra.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import tempfile
import threading
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from latentlab.errors import ConfigError
from latentlab.studio.app import create_app
from latentlab.studio.session import Studio

PORT_TRIES = 100
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port(host: str, start: int, *, tries: int = PORT_TRIES) -> int:
    """`start`, or the first port after it that can be bound on `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in range(start, min(start + tries, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise ConfigError(f"no free port on {host} from {start} to {start + tries - 1}; pick another with --port")


def url_for(host: str, port: int) -> str:
    """The address to open: a wildcard host is reached on this machine as 127.0.0.1."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host and host != "::" else host
    return f"http://{'[::1]' if host == '::' else shown}:{port}/"


def serve(
    *,
    model: str | Path | None,
    vectors: str | Path | None,
    faces: str | Path | None,
    host: str,
    port: int,
    open_browser: bool,
    say: Callable[[str], None],
) -> None:
    """Load the studio, print where it is, and serve until interrupted; the work folder goes with it."""
    with tempfile.TemporaryDirectory(prefix="latentlab-studio-") as work:
        studio = Studio.open(Path(work), model=model, vectors=vectors, faces=faces)
        app = create_app(studio)
        port = free_port(host, port)
        url = url_for(host, port)
        info = studio.info()
        say(f"model {studio.model_path} ({info['image_size']} px), gallery of {info['gallery']} face(s)")
        say(f"directions {studio.vectors_path}" if studio.dirs is not None else info["hint"])
        say(f"latentlab studio at {url}  (Ctrl-C stops it)")
        if open_browser:
            threading.Timer(1.0, webbrowser.open, [url]).start()
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        with _terminate_as_interrupt():
            server.run()


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does, so the work folder is removed on the way out.

    uvicorn shuts down on SIGTERM and then raises it again with the handler found before it ran.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

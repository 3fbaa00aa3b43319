"""A throwaway PostgreSQL cluster made from the machine's own server binaries, for the tests and benches.

``initdb`` and ``pg_ctl`` in a temporary folder: the server listens on 127.0.0.1 only, on a free port,
with its unix socket inside that folder, and trusts every local TCP connection (nobody else can reach
it and it holds nothing worth protecting). ``initdb`` refuses to run as root, so when the tests do, the
cluster runs as the ``postgres`` user, who then owns the folder.

    with PostgresCluster() as cluster:
        url = cluster.create_database()   # postgresql://postgres@127.0.0.1:PORT/db1, empty

The binaries are those of ``$PG_BIN`` if set, else those of ``initdb`` on the PATH, else the newest
``/usr/lib/postgresql/<version>/bin`` (Debian's layout). :func:`unavailable_reason` says, in one line
naming what to install, why no cluster can be started here.

psycopg is imported only when a database is created or dropped, so that this module's other parts
(finding the binaries, the skip reason) need nothing beyond the standard library.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import LiteralString

PG_BIN_VARIABLE = "PG_BIN"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_FOLDERS = Path("/usr/lib/postgresql")
INSTALL_HINT = f"apt-get install postgresql, or set {PG_BIN_VARIABLE}=/path/to/bin"
SUPERUSER = "postgres"
"""The cluster's superuser, and the system user it runs as when the tests run as root."""
START_ATTEMPTS = 5
"""Free ports tried: another process (another xdist worker's cluster) may take the one picked first."""
SECONDS_TO_START = 60


class ClusterError(RuntimeError):
    """The cluster could not be made, started or used; the message carries the server's own words."""


def _has_programs(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in PROGRAMS)


def _version(bin_folder: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,); a folder whose name is no version sorts last."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_folder.parent.name)) or (0,)


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (see the module's doc), or None."""
    configured = os.environ.get(PG_BIN_VARIABLE)
    if configured:
        return Path(configured) if _has_programs(Path(configured)) else None
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # /usr/local/bin/initdb may be a link to the real folder
    candidates += sorted(DEBIAN_FOLDERS.glob("*/bin"), key=_version, reverse=True)
    return next((folder for folder in candidates if _has_programs(folder)), None)


def _as_root() -> bool:
    return os.geteuid() == 0


def unavailable_reason() -> str | None:
    """Why no cluster can be started on this machine, in one line saying what to do (None: one can)."""
    configured = os.environ.get(PG_BIN_VARIABLE)
    if configured and not _has_programs(Path(configured)):
        return f"{PG_BIN_VARIABLE}={configured} does not hold PostgreSQL's {', '.join(PROGRAMS)}"
    if find_binaries() is None:
        return f"PostgreSQL server binaries not found ({INSTALL_HINT})"
    if _as_root():
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return (f"running as root, which initdb refuses, and there is no {SUPERUSER!r} user to run it as "
                    "(apt-get install postgresql creates one)")
        if shutil.which("runuser") is None:
            return "running as root, which initdb refuses, and there is no runuser to run it as another user (util-linux)"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


CLEANER = 'read _; folder=$1; shift; if [ -f "$folder/data/postmaster.pid" ]; then "$@" >/dev/null 2>&1; fi; rm -rf "$folder"'
"""The cleaner's script: once its standard input closes, stop the server and remove the folder."""


class PostgresCluster:
    """One throwaway cluster: :meth:`start` (or ``with``) makes and starts it, :meth:`stop` stops it and
    removes its folder, whatever state it is in.

    The stopping is a cleaner's: a shell, in a session of its own, started with the folder and waiting
    for its standard input, a pipe from this process, to close. :meth:`stop` closes it and waits for the
    cleaner; should this process die first, however it dies (an interrupted test run, a killed xdist
    worker), the pipe closes all the same and nothing is left running or on disk.

    ``durable=False`` (the tests) turns fsync off: the data is thrown away, so a crash cannot lose
    anything anyone needs, and commits do not wait for the disk. ``durable=True`` (the benches) keeps
    PostgreSQL's defaults, so that each commit is flushed as SQLite flushes its own."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.folder: Path | None = None
        self.port: int | None = None
        self._databases = 0
        self._cleaner: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``postgres`` database, as the cluster's superuser."""
        return self.database_url(SUPERUSER)

    def database_url(self, name: str) -> str:
        if self.port is None:
            raise ClusterError("the cluster is not running")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    @property
    def server_pid(self) -> int:
        """The server's process id (PostgreSQL's postmaster: each connection's backend is a child of it)."""
        if self.folder is None:
            raise ClusterError("the cluster is not running")
        return int((self._data / "postmaster.pid").read_text().split()[0])

    def start(self) -> PostgresCluster:
        reason = unavailable_reason()
        if reason is not None:
            raise ClusterError(reason)
        if self.folder is not None:
            raise ClusterError("the cluster is already started")
        binaries = find_binaries()
        assert binaries is not None  # unavailable_reason() said so
        self.folder = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        stop = self._command(binaries / "pg_ctl", "stop", "--pgdata", str(self._data), "--mode", "immediate", "--wait")
        self._cleaner = subprocess.Popen(["sh", "-c", CLEANER, "pgcluster-cleaner", str(self.folder), *stop],
                                         stdin=subprocess.PIPE, cwd=self.folder, start_new_session=True)
        try:
            if _as_root():
                shutil.chown(self.folder, SUPERUSER, SUPERUSER)
            self._run(binaries / "initdb", "--pgdata", str(self._data), "--username", SUPERUSER, "--auth", "trust",
                      "--encoding", "UTF8", "--locale", "C", "--no-sync")
            self._configure()
            self._start_on_a_free_port(binaries)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: nothing of it is kept) and remove its folder."""
        cleaner, self._cleaner, self.folder, self.port = self._cleaner, None, None, None
        if cleaner is not None:
            assert cleaner.stdin is not None
            cleaner.stdin.close()
            cleaner.wait(SECONDS_TO_START)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        self._databases += 1
        name = f"db{self._databases}"
        self._admin("CREATE DATABASE {}", name)
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (made by :meth:`create_database`), closing whatever is still connected to it."""
        name = url.rsplit("/", 1)[1]
        if not re.fullmatch(r"db\d+", name):
            raise ClusterError(f"{url} is not a database this cluster created")
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    # -- inside --
    @property
    def _data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def _admin(self, statement: LiteralString, database: str) -> None:
        import psycopg  # the postgres extra: only what uses a cluster needs it
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as connection:  # CREATE/DROP DATABASE refuse a transaction
            connection.execute(sql.SQL(statement).format(sql.Identifier(database)))

    def _configure(self) -> None:
        assert self.folder is not None
        settings = {
            "listen_addresses": _conf_string("127.0.0.1"),
            "unix_socket_directories": _conf_string(str(self.folder)),
            "max_connections": "200",  # the concurrency bench: 50 clients on 2 server processes
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with (self._data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/pgcluster.py\n" + "".join(f"{name} = {value}\n" for name, value in settings.items()))

    def _start_on_a_free_port(self, binaries: Path) -> None:
        assert self.folder is not None
        log = self.folder / "server.log"
        said = ""
        for _ in range(START_ATTEMPTS):
            port = _free_port()
            seen = log.stat().st_size if log.exists() else 0
            started = subprocess.run(self._command(binaries / "pg_ctl", "start", "--pgdata", str(self._data), "--log", str(log),
                                                   "--wait", "--timeout", str(SECONDS_TO_START), "-o", f"-p {port}"),
                                     cwd=self.folder, capture_output=True, text=True, timeout=SECONDS_TO_START + 10)
            if started.returncode == 0:
                self.port = port
                return
            said = _read_from(log, seen)  # this attempt's lines only
            if "could not bind" not in said and "already in use" not in said:
                raise ClusterError(f"pg_ctl start failed: {started.stdout}{started.stderr}{said[-2000:]}")
        raise ClusterError(f"no free port for PostgreSQL after {START_ATTEMPTS} tries:\n{said[-2000:]}")

    def _run(self, *command: str | Path) -> None:
        assert self.folder is not None
        done = subprocess.run(self._command(*command), cwd=self.folder, capture_output=True, text=True,
                              timeout=SECONDS_TO_START)
        if done.returncode != 0:
            raise ClusterError(f"{Path(command[0]).name} failed: {done.stdout}{done.stderr}")

    @staticmethod
    def _command(*command: str | Path) -> list[str]:
        """``command`` as the ``postgres`` user when we are root (see the module's doc)."""
        words = [str(word) for word in command]
        return ["runuser", "-u", SUPERUSER, "--", *words] if _as_root() else words

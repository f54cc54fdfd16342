"""A PostgreSQL server for the tests, from Debian's package: ``initdb`` into a fresh
directory and ``pg_ctl start`` on a free loopback port, with a password (scram). As root
(CI containers) it runs as the ``postgres`` user the package creates: PostgreSQL refuses
to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.kafka_broker import free_port

USER, PASSWORD, DB = "shoplake", "warehouse-secret", "shop"


def postgres_bin() -> Path | None:
    """The server binaries' directory (the newest version installed), or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda path: int(path.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        bindir = postgres_bin()
        assert bindir is not None
        self.bindir = bindir
        # not under pytest's tmp dir: the postgres user must be able to reach it
        self.root = Path(tempfile.mkdtemp(prefix="shoplake-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        secret = self.root / "pw"
        secret.write_text(PASSWORD)
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(secret, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={secret}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        self._start()
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")  # type: ignore[arg-type]

    def url(self, db: str = DB) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def new_database(self, name: str) -> str:
        """A fresh database of its own (a test's warehouse), as a URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return self.url(name)

    def _start(self) -> None:
        started = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start", "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            check=False,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr + self.log()

    def restart(self) -> None:
        """Stop at once (as a crash would, every connection cut) and start again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._start()

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

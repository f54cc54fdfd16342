"""A real Apache Kafka broker (KRaft, one node) for the integration tests.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (resolved once with
``mvn`` and cached under ~/.cache/shoplake); the broker runs as a child JVM on free
loopback ports with its data in a temporary directory.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "deploy" / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shoplake"

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
"""


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Held while a cache entry is built: parallel test workers (pytest -n) build it once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def kafka_libs() -> Path:
    """The broker's class path directory, fetched from Maven Central on first use."""
    version = POM.read_text().split("<kafka.version>")[1].split("<")[0]
    libs = CACHE / f"kafka-{version}" / "libs"
    with cache_lock(f"kafka-{version}"):
        if not (libs / ".complete").exists():
            _fetch_kafka_libs(libs)
    return libs


def _fetch_kafka_libs(libs: Path) -> None:
    libs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        ],
        check=True,
    )  # fmt: skip
    (libs / ".complete").touch()


# The SASL/PLAIN listener's one user, for tests of credentials (right and wrong).
SASL_USER, SASL_PASSWORD = "shoplake", "shoplake-secret"


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket stays bound until all are picked (ports
    picked one after another may repeat, and a broker whose listeners share one fails)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


class KafkaBroker:
    """One KRaft node (broker + controller); ``stop``/``start`` keep its data. Clients
    connect in PLAINTEXT at ``bootstrap``, or with SASL/PLAIN (SASL_USER) at
    ``sasl_bootstrap``."""

    def __init__(self, workdir: Path, partitions: int = 3) -> None:
        self.workdir = workdir
        self.port, self.controller_port, self.sasl_port = free_ports(3)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.sasl_bootstrap = f"127.0.0.1:{self.sasl_port}"
        self.libs = kafka_libs()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "log4j2.properties").write_text(_LOG4J2)
        self.config = workdir / "server.properties"
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port},"
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                    "SASL_PLAINTEXT:SASL_PLAINTEXT",
                    "sasl.enabled.mechanisms=PLAIN",
                    "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f'user_{SASL_USER}="{SASL_PASSWORD}";',
                    f"log.dirs={workdir / 'data'}",
                    f"num.partitions={partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(self.config))

    def _command(self, main: str, *args: str) -> list[str]:
        # C1 only: a test broker's light load does not repay C2's compiling (~20% less CPU)
        return [
            "java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]  # fmt: skip

    def _java(self, main: str, *args: str) -> None:
        done = subprocess.run(self._command(main, *args), capture_output=True)
        if done.returncode:
            output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            raise RuntimeError(f"{main} exited with {done.returncode}:\n{output}")

    def start(self, timeout: float = 60.0) -> None:
        log = (self.workdir / "broker.log").open("ab")
        self.proc = subprocess.Popen(
            self._command("kafka.Kafka", str(self.config)), stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kafka exited; see {self.workdir / 'broker.log'}")
            if self._ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"Kafka not ready in {timeout} s; see {self.workdir / 'broker.log'}")

    def _ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            # quiet: until the broker listens, each try logs "Connection refused" to stderr
            admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
            meta = admin.list_topics(timeout=1)
        except Exception:
            return False
        return bool(meta.brokers)

    def kill(self) -> None:
        """SIGKILL the broker JVM (no clean shutdown: its logs are recovered on start)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _cluster_id() -> str:
    """A random Kafka cluster id. Like Kafka's own Uuid.randomUuid, never one starting with '-':
    the storage tool would read it as an option (CI lost a worker's Kafka tests to that)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id

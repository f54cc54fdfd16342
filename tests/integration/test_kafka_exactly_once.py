"""Through the gateway into Kafka and on to bronze, while ingest workers are SIGKILLed,
join and leave their consumer group, and the broker itself goes down and comes back:
bronze ends with every acknowledged event exactly once."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shoplake.settings import Settings
from tests.conftest import SHOPLAKE
from tests.integration.clients import bronze_ids
from tests.integration.kafka_broker import KafkaBroker, free_port
from tests.integration.test_serve import wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_run = itertools.count()


def kafka_env(home: Path, kafka: KafkaBroker) -> dict[str, str]:
    prefix = f"eo{next(_run)}-{os.getpid()}-"
    env = {
        **os.environ,
        "SHOPLAKE_HOME": str(home),
        "SHOPLAKE_TRANSPORT__KIND": "kafka",
        "SHOPLAKE_TRANSPORT__KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SHOPLAKE_TRANSPORT__PARTITIONS": "4",
        # small batches: many commits, so kills land before, during and after them
        "SHOPLAKE_PIPELINE__BATCH_MAX_RECORDS": "700",
        "SHOPLAKE_PIPELINE__BATCH_MAX_SECONDS": "0.2",
    }
    for name, topic in Settings().topics.model_dump(exclude_none=True).items():
        env[f"SHOPLAKE_TOPICS__{name.upper()}"] = prefix + topic
    return env


def test_acknowledged_events_land_in_bronze_exactly_once(
    tmp_path: Path, kafka: KafkaBroker
) -> None:
    rng = random.Random(4)
    env = kafka_env(tmp_path / "home", kafka)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    gateway = subprocess.Popen(
        [*SHOPLAKE, "serve", "--no-auth", "--port", str(port)], env=env, **quiet
    )
    wait_healthy(url, gateway)
    sender = subprocess.Popen(
        [*SHOPLAKE, "generate", "-n", "24000", "--rate", "1200", "--to", url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*SHOPLAKE, "run", "--job", "ingestion"], env=env, **quiet)

    workers = [worker()]
    kills = 0
    broker_bounced = False
    started = time.monotonic()
    while sender.poll() is None and time.monotonic() - started < 240:
        time.sleep(rng.uniform(0.5, 2.0))
        if not broker_bounced and time.monotonic() - started > 6:
            kafka.stop()  # the gateway answers 503; the sender retries
            time.sleep(3)
            kafka.start()
            broker_bounced = True
        action = rng.random()
        if action < 0.4 and len(workers) < 2:
            workers.append(worker())  # a second member: the group rebalances
        elif workers:
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            if not workers:
                workers.append(worker())
    assert sender.wait(timeout=120) == 0, sender.stderr.read().decode() if sender.stderr else ""
    report = sender.stderr.read().decode() if sender.stderr else ""
    accepted = int(re.search(r"gateway accepted (\d+)", report).group(1))  # type: ignore[union-attr]
    assert accepted == 24000
    assert kills >= 5 and broker_bounced
    for w in workers:
        w.send_signal(signal.SIGKILL)
        w.wait()
    gateway.send_signal(signal.SIGINT)
    gateway.wait(30)

    # One worker drains the rest once the dead members' sessions have expired.
    deadline = time.monotonic() + 120
    ids = bronze_ids(Path(env["SHOPLAKE_HOME"]))
    while len(ids) < accepted and time.monotonic() < deadline:
        subprocess.run(
            [*SHOPLAKE, "run", "--job", "ingestion", "--until-idle"],
            env=env, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        ids = bronze_ids(Path(env["SHOPLAKE_HOME"]))
    # Every transport record is in bronze exactly once (checked in bronze_ids), and
    # every acknowledged event is there once: a request answered 503 while the broker was
    # away had its transaction aborted, so the sender's retry is the only copy readers see.
    assert len(ids) == len(set(ids)) == accepted

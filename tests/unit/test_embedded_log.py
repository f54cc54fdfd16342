import multiprocessing
from pathlib import Path

import pyarrow as pa
import pytest

from shoplake.errors import ConfigError, TransportError
from shoplake.settings import Settings
from shoplake.transport import embedded
from shoplake.transport.base import OutgoingMessage, TopicPartition
from shoplake.transport.embedded import _BATCH_SCHEMA, EmbeddedLog, _encode


def open_log(settings: Settings) -> EmbeddedLog:
    return EmbeddedLog.open(settings.log_path, settings)


def test_creates_every_topic_with_its_partitions(settings: Settings) -> None:
    log = open_log(settings)
    tps = log.partitions()
    assert len(tps) == len(settings.topics.all()) * settings.transport.partitions
    assert TopicPartition("purchases", 2) in tps
    assert all(v == 0 for v in log.end_offsets().values())


def test_append_then_read_in_offset_order(settings: Settings) -> None:
    log = open_log(settings)
    log.append([OutgoingMessage("purchases", f"s{i % 5}", f"v{i}".encode()) for i in range(100)])
    start = {tp: 0 for tp in log.partitions()}
    got = log.read(start, 1000).records
    assert got.num_rows == 100
    by_part: dict[int, list[int]] = {}
    for row in got.to_pylist():
        assert row["topic"] == "purchases"
        by_part.setdefault(row["partition"], []).append(row["offset"])
    for offsets in by_part.values():
        assert offsets == list(range(len(offsets)))  # contiguous from 0, in order
    # one key, one partition
    key_parts: dict[bytes, set[int]] = {}
    for row in got.to_pylist():
        key_parts.setdefault(row["key"], set()).add(row["partition"])
    assert all(len(p) == 1 for p in key_parts.values())


def test_read_from_a_position_and_respect_the_limit(settings: Settings) -> None:
    log = open_log(settings)
    log.append([OutgoingMessage("payments", "k", str(i).encode()) for i in range(50)])
    tp = next(tp for tp, end in log.end_offsets().items() if end)
    batch = log.read({tp: 40}, 5)
    assert batch.positions == {tp: 45}
    got = batch.records
    assert got["offset"].to_pylist() == [40, 41, 42, 43, 44]
    assert got["value"].to_pylist() == [b"40", b"41", b"42", b"43", b"44"]


def test_records_survive_reopening(settings: Settings) -> None:
    log = open_log(settings)
    log.append([OutgoingMessage("page-views", None, b"x")] * 10)
    log.close()
    again = open_log(settings)
    assert sum(again.end_offsets().values()) == 10
    assert again.read({tp: 0 for tp in again.partitions()}, 100).records.num_rows == 10


def test_unknown_topics_are_created_on_append(settings: Settings) -> None:
    log = open_log(settings)
    log.append([OutgoingMessage("audit", "k", b"x")])
    assert TopicPartition("audit", 0) in log.partitions()


def _append_many(path: str, home: str, worker: int) -> None:
    s = Settings(home=Path(home))
    log = EmbeddedLog.open(Path(path), s)
    for batch in range(20):
        log.append(
            [
                OutgoingMessage("cart-events", f"k{i}", f"{worker}:{batch}:{i}".encode())
                for i in range(50)
            ]
        )
    log.close()


def test_concurrent_writers_get_distinct_contiguous_offsets(settings: Settings) -> None:
    open_log(settings).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_many, args=(str(settings.log_path), str(settings.home), w))
        for w in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = open_log(settings)
    got = log.read({tp: 0 for tp in log.partitions()}, 10_000).records
    assert got.num_rows == 3 * 20 * 50
    assert len(set(got["value"].to_pylist())) == 3000  # nothing lost or doubled
    for tp, end in log.end_offsets().items():
        offsets = [r["offset"] for r in got.to_pylist() if (r["topic"], r["partition"]) == tp]
        assert offsets == list(range(end))


def test_truncate_only_what_every_group_committed(settings: Settings) -> None:
    log = open_log(settings)
    for _ in range(10):  # ten record batches of one record
        log.append([OutgoingMessage("purchases", "same-key", b"x")])
    tp = next(tp for tp, end in log.end_offsets().items() if end)
    assert log.truncate_committed() == 0  # no group yet: keep everything
    log.commit("a", {tp: 6})
    log.commit("b", {tp: 4})
    assert log.committed("a") == {tp: 6}
    assert log.truncate_committed() == 4
    assert log.read({tp: 0}, 100).records["offset"].to_pylist() == list(range(4, 10))
    assert log.end_offsets()[tp] == 10  # offsets never go back
    assert log.record_count() == 6


def test_missing_log_and_unusable_directory_are_clear_errors(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "nothing")
    with pytest.raises(TransportError, match="no embedded log"):
        EmbeddedLog.open(s.log_path, s, create=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = Settings(home=blocker / "home")
    with pytest.raises(ConfigError, match="cannot use"):
        EmbeddedLog.open(s.log_path, s)


def test_reads_cross_record_batches(settings: Settings) -> None:
    log = open_log(settings)
    for b in range(3):
        log.append([OutgoingMessage("payments", "k", f"{b}-{i}".encode()) for i in range(10)])
    tp = next(tp for tp, end in log.end_offsets().items() if end)
    got = log.read({tp: 5}, 17).records
    assert got["offset"].to_pylist() == list(range(5, 22))
    assert got["value"].to_pylist()[0] == b"0-5" and got["value"].to_pylist()[-1] == b"2-1"
    past_the_end = log.read({tp: 30}, 10)
    assert past_the_end.records.num_rows == 0 and past_the_end.positions == {}


def test_small_plain_and_large_compressed_batches_read_back_alike(settings: Settings) -> None:
    # Batches under 8 KiB are stored without zstd, larger ones with it: one reader for both.
    log = open_log(settings)
    small = [OutgoingMessage("purchases", "k", b"tiny")]
    large = [OutgoingMessage("purchases", "k", b"x" * 200 + str(i).encode()) for i in range(200)]
    log.append(small)
    log.append(large)
    log.append(small)
    got = log.read({tp: 0 for tp in log.partitions()}, 1000).records
    assert got["value"].to_pylist() == [m.value for m in (*small, *large, *small)]
    assert got["offset"].to_pylist() == list(range(202))


@pytest.mark.parametrize("rows_a_statement", [1000, 2])
def test_one_append_over_many_topics_and_partitions_keeps_each_record_whole(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, rows_a_statement: int
) -> None:
    # an append's records are encoded as one batch, sliced per partition, and written in
    # statements of many rows (also when they take several)
    monkeypatch.setattr(embedded, "_ROWS_A_STATEMENT", rows_a_statement)
    log = open_log(settings)
    topics = ["purchases", "payments", "page-views"]
    sent = [
        OutgoingMessage(topics[i % 3], None if i % 7 == 0 else f"k{i % 11}", f"{i}".encode())
        for i in range(300)
    ]
    log.append(sent)
    got = log.read({tp: 0 for tp in log.partitions()}, 1000).records.to_pylist()
    by_value = {int(row["value"]): row for row in got}
    assert sorted(by_value) == list(range(300))
    for i, message in enumerate(sent):
        row = by_value[i]
        assert (row["topic"], row["key"]) == (message.topic, message.key and message.key.encode())
    for tp in {(row["topic"], row["partition"]) for row in got}:
        rows = [r for r in got if (r["topic"], r["partition"]) == tp]
        values = [int(r["value"]) for r in rows]
        assert values == sorted(values)  # sent order within a partition
        assert [r["offset"] for r in rows] == list(range(len(rows)))
    log.append(sent[:10])  # the next append goes on from the offsets the last one moved
    assert sum(log.end_offsets().values()) == 310


def test_each_partitions_batch_is_the_ipc_stream_arrow_writes() -> None:
    # written without a stream writer each, but byte for byte what one writes (any Arrow
    # reader, and logs written before, read the same format): small slices plain, larger
    # ones compressed through one shared writer
    values = [f"{i:0300d}".encode() for i in range(120)]
    batch = pa.record_batch([pa.array([b"k", None] * 60), pa.array(values)], schema=_BATCH_SCHEMA)
    slices = [batch.slice(0, 2), batch.slice(2, 40), batch.slice(42, 1), batch.slice(43, 77)]
    sized = [(part, sum(len(v) for v in part["value"].to_pylist())) for part in slices]
    assert [size >= embedded._COMPRESS_FROM_BYTES for _, size in sized] == [0, 1, 0, 1]
    for (part, size), stream in zip(sized, _encode(sized), strict=True):
        sink = pa.BufferOutputStream()
        options = embedded._IPC if size >= embedded._COMPRESS_FROM_BYTES else None
        with pa.ipc.new_stream(sink, _BATCH_SCHEMA, options=options) as writer:
            writer.write_batch(part)
        assert stream == sink.getvalue().to_pybytes()

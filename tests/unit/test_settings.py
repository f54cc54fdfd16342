from decimal import Decimal

import pytest

from shoplake.errors import ConfigError
from shoplake.settings import Settings, load_settings


def test_defaults_run_on_a_laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP", "LAKEHOUSE_URI", "TOPIC_ORDER_EVENTS", "TOPIC_PAYMENT_EVENTS"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.transport.kind == "embedded"
    assert str(s.home) == "shoplake-data"
    assert s.lake_root == "shoplake-data/lake"
    assert s.reporting.currency == "USD"
    assert s.reporting.rates["JPY"] == Decimal("0.0067")


def test_nested_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPLAKE_TRANSPORT__PARTITIONS", "6")
    monkeypatch.setenv("SHOPLAKE_REPORTING__CURRENCY", "EUR")
    monkeypatch.setenv("SHOPLAKE_HOME", "/tmp/elsewhere")
    s = load_settings()
    assert s.transport.partitions == 6
    assert s.reporting.currency == "EUR"
    assert s.reporting.rate_to_reporting("EUR") == 1
    assert str(s.home) == "/tmp/elsewhere"


def test_seed_aliases_apply_but_shoplake_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "broker:29092")
    monkeypatch.setenv("TOPIC_ORDER_EVENTS", "orders.events")
    monkeypatch.setenv("TOPIC_PAYMENT_EVENTS", "payments.events")
    monkeypatch.setenv("LAKEHOUSE_URI", "/data/lake")
    s = load_settings()
    assert s.transport.kafka_bootstrap == "broker:29092"
    assert s.topics.purchases == "orders.events"
    assert s.topics.payments == "payments.events"
    assert s.lake_root == "/data/lake"
    monkeypatch.setenv("SHOPLAKE_TOPICS__PURCHASES", "mine")
    assert load_settings().topics.purchases == "mine"


def test_object_storage_takes_the_aws_variables_and_hides_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAKEHOUSE_URI", "s3a://warehouse/shop")  # as the seeds' Spark writes it
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("S3_ENDPOINT", "http://ignored:9000")  # the first alias set wins
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio123-very-secret")
    s = load_settings()
    assert (s.lake_root, s.on_object_storage) == ("s3://warehouse/shop", True)
    assert (s.storage.endpoint, s.storage.region) == ("http://minio:9000", "eu-west-1")
    assert (s.storage.access_key_id, s.storage.http) == ("minio", True)
    assert s.storage.secret_access_key is not None
    assert s.storage.secret_access_key.get_secret_value() == "minio123-very-secret"
    assert "minio123-very-secret" not in repr(s) + str(s)
    monkeypatch.setenv("SHOPLAKE_STORAGE__REGION", "us-east-2")
    assert load_settings().storage.region == "us-east-2"
    monkeypatch.setenv("SHOPLAKE_LAKEHOUSE_URI", "gs://bucket/lake")
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        load_settings()


def test_invalid_values_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPLAKE_TRANSPORT__PARTITIONS", "zero")
    with pytest.raises(ConfigError, match=r"transport\.partitions"):
        load_settings()
    monkeypatch.setenv("SHOPLAKE_TRANSPORT__PARTITIONS", "2")
    monkeypatch.setenv("SHOPLAKE_REPORTING__RATES", '{"USD": 1, "EUR": -1}')
    with pytest.raises(ConfigError, match="rate for EUR"):
        load_settings()
    monkeypatch.delenv("SHOPLAKE_REPORTING__RATES")
    monkeypatch.setenv("SHOPLAKE_REPORTING__TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_settings()
    monkeypatch.setenv("SHOPLAKE_REPORTING__TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("SHOPLAKE_REPORTING__CURRENCY", "CHF")
    with pytest.raises(ConfigError, match="CHF has no rate"):
        load_settings()


def test_the_dedupe_spill_size_is_a_positive_size_or_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().pipeline.dedupe_spill_mib == 4
    monkeypatch.setenv("SHOPLAKE_PIPELINE__DEDUPE_SPILL_MIB", "None")  # all on the heap
    assert load_settings().pipeline.dedupe_spill_mib is None
    monkeypatch.setenv("SHOPLAKE_PIPELINE__DEDUPE_SPILL_MIB", "0")
    with pytest.raises(ConfigError, match=r"pipeline\.dedupe_spill_mib"):
        load_settings()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.home = "x"  # type: ignore[misc,assignment]

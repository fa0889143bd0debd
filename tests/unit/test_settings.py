from __future__ import annotations

from pathlib import Path

import pytest

from rayapp.errors import ConfigError
from rayapp.lake import Lake
from rayapp.sinks import store
from rayapp.settings import load_settings, redact_url


def test_defaults_are_absolute_and_derived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_dir == tmp_path / "data"
    assert s.lake_root == str(tmp_path / "data" / "lake")
    assert s.landing == str(tmp_path / "data" / "lake" / "landing")
    assert store("clickhouse").url(s) == f"chdb://{tmp_path}/data/clickhouse"
    assert store("graph").url(s) == f"ladybug://{tmp_path}/data/graph"
    assert store("vector").url(s) == f"lancedb://{tmp_path}/data/vectors"
    assert store("postgres").url(s) == f"pgserver://{tmp_path}/data/postgres"


def test_precedence_override_env_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "rayapp.toml"
    cfg.write_text('data_dir = "/tmp/from-toml"\nsource_system = "toml"\ns3_region = "eu-west-1"\n')
    monkeypatch.setenv("RAYAPP_SOURCE_SYSTEM", "env")
    s = load_settings(cfg, overrides={"s3_region": "ap-south-1"})
    assert str(s.data_dir) == "/tmp/from-toml"  # only in TOML
    assert s.source_system == "env"  # env beats TOML
    assert s.s3_region == "ap-south-1"  # override beats everything


def test_config_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('lake_uri = "s3://bucket/lake"\n')
    monkeypatch.setenv("RAYAPP_CONFIG", str(cfg))
    s = load_settings()
    assert s.lake_root == "s3://bucket/lake"
    assert s.landing == "s3://bucket/lake/landing"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"lake_uri": "ftp://host/x"}, "RAYAPP_LAKE_URI"),
        ({"s3_endpoint_url": "127.0.0.1:9000"}, "RAYAPP_S3_ENDPOINT_URL"),
        ({"clickhouse_url": "mysql://x"}, "RAYAPP_CLICKHOUSE_URL"),
        ({"ray_num_cpus": "0"}, "RAYAPP_RAY_NUM_CPUS"),
        ({"log_level": "LOUD"}, "RAYAPP_LOG_LEVEL"),
        ({"no_such_setting": "1"}, "no_such_setting"),
    ],
)
def test_invalid_settings_name_the_setting(overrides: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides=overrides)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_env_invalid_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYAPP_S3_ALLOW_HTTP", "perhaps")
    with pytest.raises(ConfigError, match="RAYAPP_S3_ALLOW_HTTP"):
        load_settings()


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings("/nonexistent/rayapp.toml")


def test_secrets_redacted_everywhere() -> None:
    s = load_settings(
        overrides={
            "s3_secret_access_key": "SUPERSECRET",
            "postgres_url": "postgresql://app:hunter2@db:5432/rayapp",
            "s3_endpoint_url": "http://127.0.0.1:9000",
        }
    )
    red = s.redacted()
    text = repr(s) + str(red)
    assert "SUPERSECRET" not in text and "hunter2" not in text
    assert red["postgres_url"] == "postgresql://app:***@db:5432/rayapp"
    assert Lake(s).storage_options["AWS_SECRET_ACCESS_KEY"] == "SUPERSECRET"
    assert Lake(s).storage_options["AWS_ALLOW_HTTP"] == "true"  # inferred from http:// endpoint


def test_redact_url_query_tokens() -> None:
    assert redact_url("pinecone://idx?api_key=abc&x=1") == "pinecone://idx?api_key=***&x=1"
    assert redact_url("chdb:///tmp/x") == "chdb:///tmp/x"

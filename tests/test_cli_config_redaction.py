"""`costline config` shows no password a URL carries (a catalog URI, an S3 or OTLP endpoint), whatever its key is
called: one redactor, the table lake's, hides it everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.netsec import redact_url

CONFIG = """
[lake]
mode = "table"
catalog_uri = "postgresql+psycopg2://costline:Hunter2SuperSecret@db.internal/costline"
s3_endpoint = "https://AKIAUSER:s3pass@minio.internal:9000"
[collector]
metrics_otlp_endpoint = "https://user:otlppass@otlp.example.com/v1/metrics"
"""


def test_config_redacts_the_password_of_every_url(tmp_path: Path) -> None:
    path = tmp_path / "costline.toml"
    path.write_text(CONFIG, encoding="utf-8")
    _register_area_commands()
    result = CliRunner().invoke(cli, ["--config", str(path), "config"], env={
        "COSTLINE_SERVING_GATEWAY_ALLOWED_ORIGINS": "https://a.com,https://web:originpass@b.com"})
    assert result.exit_code == 0, result.output
    for secret in ("Hunter2SuperSecret", "s3pass", "otlppass", "originpass"):
        assert secret not in result.output
    lines = {line.strip() for line in result.output.splitlines()}
    assert "catalog_uri = postgresql+psycopg2://costline:***@db.internal/costline" in lines
    assert "s3_endpoint = https://AKIAUSER:***@minio.internal:9000" in lines
    assert "metrics_otlp_endpoint = https://user:***@otlp.example.com/v1/metrics" in lines
    assert "allowed_origins = ('https://a.com', 'https://web:***@b.com')" in lines
    assert "warehouse = s3://costline-lake/warehouse" in lines  # a URL without userinfo is shown as it is


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql+psycopg2://costline:pw@db/costline", "postgresql+psycopg2://costline:***@db/costline"),
    ("postgresql://costline@db/costline", "postgresql://costline@db/costline"),  # no password: nothing to hide
    ("sqlite:////tmp/catalog.db", "sqlite:////tmp/catalog.db"),
    ("user:pw@host", "user:pw@host"),  # no scheme: no URL
    ("https://u:p:q@h", "https://u:***@h"),
    # libpq takes the password as a query parameter too; a password may hold an "@"
    ("postgresql+psycopg2://costline@127.0.0.1:9/postgres?password=hunter2-SECRET",
     "postgresql+psycopg2://costline@127.0.0.1:9/postgres?password=***"),
    ("postgresql://u@h/db?sslmode=require&sslpassword=zz", "postgresql://u@h/db?sslmode=require&sslpassword=***"),
    ("postgresql://costline:p@ss2@db/x", "postgresql://costline:***@db/x"),
    ("s3://bucket/wh?x=1&secret_access_key=abc&y=2", "s3://bucket/wh?x=1&secret_access_key=***&y=2"),
    # a password with a raw "/" (RFC 3986 wants it percent-encoded; people paste it as it is)
    ("http://minio:se/cret@objstore:9000/x", "http://minio:***@objstore:9000/x"),
    ("postgresql://u:a/b/c@db/cat?sslmode=require", "postgresql://u:***@db/cat?sslmode=require"),
])
def test_one_redactor_for_the_cli_and_the_table_lake(uri: str, shown: str) -> None:
    from costline import tablelake

    assert tablelake._redact is redact_url
    assert redact_url(uri) == shown

"""Tests of `remote.url`: the ``--remote`` URL forms, their defaults, and the errors a person gets for
a malformed one (one line, actionable, no secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pageserver_operator.remote import url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_file_url_gives_a_local_config() -> None:
    config = url.parse_remote_url("file:///var/lib/remote", concurrency=3)
    assert config == url.RemoteConfig(kind="local", local_path=Path("/var/lib/remote"), concurrency=3)
    assert config.describe() == "file:///var/lib/remote"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("file:///a/b/", "/a/b"),
        ("file://localhost/a/b", "/a/b"),
        ("file:/a/b", "/a/b"),
        ("file:///with%20space/x", "/with space/x"),
        ("  file:///trimmed  ", "/trimmed"),
    ],
)
def test_file_url_variants(text: str, path: str) -> None:
    assert url.parse_remote_url(text).local_path == Path(path)


def test_s3_url_with_everything() -> None:
    config = url.parse_remote_url(
        "s3://my-bucket/some/prefix/?endpoint=http://127.0.0.1:8333&region=eu-west-1", 16
    )
    assert config == url.RemoteConfig(
        kind="s3",
        bucket="my-bucket",
        prefix="some/prefix",
        endpoint="http://127.0.0.1:8333",
        region="eu-west-1",
        concurrency=16,
    )
    assert (
        config.describe() == "s3://my-bucket/some/prefix (endpoint http://127.0.0.1:8333, region eu-west-1)"
    )


def test_s3_url_defaults_without_environment() -> None:
    config = url.parse_remote_url("s3://bucket")
    assert (config.bucket, config.prefix, config.endpoint, config.region) == ("bucket", "", None, "us-east-1")
    assert config.concurrency == url.DEFAULT_CONCURRENCY
    assert config.describe() == "s3://bucket (region us-east-1)"


def test_s3_url_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    config = url.parse_remote_url("s3://bucket/p")
    assert (config.endpoint, config.region) == ("http://127.0.0.1:9000", "eu-central-1")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")  # wins over AWS_DEFAULT_REGION
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")  # the S3-specific one wins
    config = url.parse_remote_url("s3://bucket/p")
    assert (config.endpoint, config.region) == ("http://127.0.0.1:9001", "ap-south-1")
    config = url.parse_remote_url("s3://bucket/p?region=us-west-2&endpoint=https://s3.example.com")
    assert (config.endpoint, config.region) == ("https://s3.example.com", "us-west-2")  # the URL wins


@pytest.mark.parametrize(
    ("text", "config"),
    [
        ("file:///srv/remote%20store", url.RemoteConfig(kind="local", local_path=Path("/srv/remote store"))),
        (
            "s3://b-1.x/a/b?endpoint=http://h:1&region=r-1",
            url.RemoteConfig(kind="s3", bucket="b-1.x", prefix="a/b", endpoint="http://h:1", region="r-1"),
        ),
        ("s3://bucket?region=us-east-1", url.RemoteConfig(kind="s3", bucket="bucket")),
    ],
)
def test_every_field_can_be_written_in_a_url(text: str, config: url.RemoteConfig) -> None:
    assert url.parse_remote_url(text) == config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("/data/remote", "did you mean file:///data/remote"),
        ("data/remote", "no scheme"),
        ("file://data/remote", "three slashes"),
        ("file:relative/path", "relative"),
        ("file:///", "refusing to use /"),
        ("file:///a/../b", "'..'"),
        ("file:///a?x=1", "unknown parameter(s) x"),
        ("file:///a#frag", "fragment"),
        ("http://bucket/x", "unsupported remote storage scheme 'http'"),
        ("gs://bucket", "unsupported remote storage scheme 'gs'"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3://Bucket_Name", "invalid S3 bucket name"),
        ("s3://ab", "invalid S3 bucket name"),
        ("s3://bucket?endpoint=ftp://h", "invalid S3 endpoint"),
        ("s3://bucket?endpoint=http://", "invalid S3 endpoint"),
        ("s3://bucket?endpoint=http://h:99999", "bad port"),
        ("s3://bucket?region=", "empty value"),
        ("s3://bucket?region=a&region=b", "given twice"),
        ("s3://bucket?regoin=us-east-1", "unknown parameter(s) regoin"),
        ("s3://bucket?region=us east", "invalid S3 region"),
        ("s3://bucket/a//b", "invalid S3 prefix"),
        ("s3://bucket/a/../b", "invalid S3 prefix"),
    ],
)
def test_malformed_urls_are_rejected_with_one_actionable_line(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as raised:
        url.parse_remote_url(text)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        "s3://AKIAXXXX:supersecret@bucket/prefix",
        "s3://bucket?endpoint=http://AKIAXXXX:supersecret@host:9000",
        "s3://bucket?secret_key=supersecret",
        "file://user:supersecret@host/x",
    ],
)
def test_errors_never_repeat_secrets(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        url.parse_remote_url(text)
    assert "supersecret" not in str(raised.value)


@pytest.mark.parametrize("concurrency", [0, -1, url.MAX_CONCURRENCY + 1])
def test_concurrency_out_of_range_is_rejected(concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        url.parse_remote_url("file:///x", concurrency=concurrency)


def test_config_validates_itself_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="absolute"):
        url.RemoteConfig(kind="local", local_path=Path("relative"))
    with pytest.raises(ValueError, match="no bucket"):
        url.RemoteConfig(kind="s3")
    with pytest.raises(ValueError, match="must not start or end"):
        url.RemoteConfig(kind="s3", bucket="bucket", prefix="/p/")
    with pytest.raises(ValueError, match="takes no bucket"):
        url.RemoteConfig(kind="local", local_path=Path("/x"), bucket="bucket")
    with pytest.raises(ValueError, match="unknown remote storage kind"):
        url.RemoteConfig(kind="gcs")  # type: ignore[arg-type]

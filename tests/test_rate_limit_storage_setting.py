"""--rate-limit-storage: which URLs are accepted, what a wrong one is told, and that its
password is never shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from diffuserve.cli import main
from diffuserve.config import Settings


def test_limits_are_counted_in_this_process_by_default() -> None:
    assert Settings().rate_limit_storage == "memory://"


@pytest.mark.parametrize("url", [
    "memory://",
    "redis://127.0.0.1:6379/0",
    "redis://redis.internal:6379",
    "rediss://:pw@redis.example.com:6380/2",
    "redis://default:pw@[::1]:6379/1",
    "redis+sentinel://s1:26379,s2:26379/mymaster",
])
def test_memory_and_redis_urls_are_accepted(url: str) -> None:
    assert Settings(rate_limit_storage=url).rate_limit_storage == url


@pytest.mark.parametrize(("url", "told"), [
    ("memcached://cache:11211", "not a memcached:// URL"),
    ("localhost:6379", "not a value that is not such a URL"),
    ("redis://:pw@redis", "needs HOST:PORT"),
    ("redis://redis:port/0", "needs HOST:PORT"),
    ("redis://redis:6379/zero", "takes a database number"),
    ("redis+sentinel://s1:26379", "needs the service name"),
    ("memory://elsewhere", "takes nothing after the scheme"),
])
def test_an_unusable_url_is_a_clear_error(url: str, told: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(rate_limit_storage=url)
    (error,) = caught.value.errors()
    assert error["loc"] == ("rate_limit_storage",)
    assert told in error["msg"]
    assert "memory://" in error["msg"] or "redis" in error["msg"]


def test_the_command_line_reports_a_bad_url_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "--rate-limit-storage", "mongodb://user:hunter2@db:27017"]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration: rate_limit_storage" in err
    assert "must be memory:// (this process) or redis://HOST:PORT/DB" in err
    assert "hunter2" not in err


def test_the_summary_and_repr_mask_the_password() -> None:
    settings = Settings(rate_limit_storage="redis://app:hunter2@redis:6379/0?password=x2")
    summary = settings.safe_summary()
    assert summary["rate_limit_storage"] == "redis://app:***@redis:6379/0?password=***"
    assert "hunter2" not in repr(settings)
    assert Settings().safe_summary()["rate_limit_storage"] == "memory://"

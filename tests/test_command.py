"""``scrapy sticky_proxy``: run as users run it, against a real Redis seeded in
the layout redis_store.py writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scrapy.cmdline import execute
from scrapy.settings import Settings

from scrapy_sticky_proxy.command import start_url_message

from .conftest import assert_absent

redis = pytest.importorskip("redis")

NS = "sticky_proxy"
FORM = {"q": "café", "page": "2"}  # the POST body below, as scrapy-redis formdata


def scrapy(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def scrapy_inline(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The same command line, in this process (for the quick error cases)."""
    with pytest.raises(SystemExit) as exit_info:
        execute(["scrapy", "sticky_proxy", *args], Settings())
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def client(redis_db: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    yield client
    client.close()


def seed_status(client: Any, ns: str, now: float) -> None:
    for index, generation in enumerate([1, 1, 2, 3, 4, 7]):
        client.set(f"{ns}:g:{index:024x}", generation, ex=3600)
    client.set(f"{ns}:stats:bumps", 11)
    proxies = {
        "10.0.0.1:8000": [0, None, True],
        "10.0.0.2:8000": [1, None, True],
        "10.0.0.3:8000": [3, now + 60, True],
        "10.0.0.4:8000": [12, now + 1800, False],
    }
    client.hset(f"{ns}:proxies", mapping={k: json.dumps(v) for k, v in proxies.items()})
    client.rpush(f"{ns}:gave_up", *(json.dumps({"url": f"u{i}"}) for i in range(3)))
    beat = {"spider": "demo", "host": "box1", "pid": 4242, "start": now - 3725}
    client.set(f"{ns}:crawlers:box1:4242:demo", json.dumps(beat), ex=30)
    # A crawler that stopped beating: its heartbeat's expiry has passed.
    gone = {"spider": "gone", "host": "box2", "pid": 7, "start": now - 99}
    client.set(f"{ns}:crawlers:box2:7:gone", json.dumps(gone), pxat=int(now * 1000) - 1)


def test_status_text_and_json(client: Any, redis_db: str, tmp_path: Path) -> None:
    now = time.time()
    seed_status(client, NS, now)
    # A namespace with a glob character must not read its neighbours' keys.
    client.set(f"sticky*:g:{7:024x}", 2)  # a digest: crawlers skip other names
    client.hset("sticky*:proxies", "10.9.9.9:80", json.dumps([12, None, True]))

    text = scrapy(
        tmp_path, "sticky_proxy", "status", "-s", f"STICKY_PROXY_REDIS_URL={redis_db}"
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"Redis {redis_db}, namespace 'sticky_proxy'" in lines
    assert "Burned keys: 6 (by generation 1: 2, 2: 1, 3: 1, 4+: 2)" in lines
    assert "Generation bumps: 11" in lines
    assert "Given up: 3" in lines
    assert "Static proxies: 4" in lines
    rows = {
        line.split()[0]: line.split()[1:] for line in lines if line.startswith("  10.")
    }
    assert rows["10.0.0.1:8000"] == ["healthy", "0", "-"]
    assert rows["10.0.0.2:8000"] == ["degraded", "1", "-"]
    assert rows["10.0.0.3:8000"][:2] == ["unhealthy", "3"]
    assert rows["10.0.0.4:8000"][:2] == ["dead", "12"]
    assert 0 < int(rows["10.0.0.3:8000"][2].rstrip("s")) <= 60
    assert "Live crawlers: 1" in lines
    crawler = next(line for line in lines if line.startswith("  demo"))
    assert crawler.split()[1:3] == ["box1", "4242"]
    hours, minutes, seconds = map(int, crawler.split()[3].split(":"))
    assert 3725 <= hours * 3600 + minutes * 60 + seconds < 3785
    assert "gone" not in text.stdout

    raw = scrapy(tmp_path, "sticky_proxy", "status", "--json", "--redis-url", redis_db)
    assert raw.returncode == 0, raw.stderr
    status = json.loads(raw.stdout)
    assert set(status) == {
        "redis_url", "namespace", "time", "burned_keys", "generations", "bumps",
        "proxies", "gave_up", "crawlers",
    }  # fmt: skip
    assert status["redis_url"] == redis_db
    assert status["burned_keys"] == 6
    assert status["generations"] == {"1": 2, "2": 1, "3": 1, "4+": 2}
    assert (status["bumps"], status["gave_up"]) == (11, 3)
    states = {p["id"]: p for p in status["proxies"]}
    assert [p["state"] for p in status["proxies"]] == [
        "healthy", "degraded", "unhealthy", "dead",
    ]  # fmt: skip
    assert states["10.0.0.1:8000"]["retry_at"] is None
    assert states["10.0.0.4:8000"]["retry_at"] == pytest.approx(now + 1800)
    assert 1740 < states["10.0.0.4:8000"]["retry_in"] <= 1800
    assert states["10.0.0.4:8000"]["ever_ok"] is False
    [crawler_json] = status["crawlers"]
    assert crawler_json["spider"] == "demo" and crawler_json["pid"] == 4242
    assert crawler_json["start"] == pytest.approx(now - 3725)
    assert 3725 <= crawler_json["uptime"] < 3785

    # Thresholds come from the project's settings, as crawlers read them.
    other = scrapy(
        tmp_path, "sticky_proxy", "status", "--json", "--redis-url", redis_db,
        "--namespace", "sticky*", "-s", "STICKY_PROXY_LIST_DEAD_AFTER=20",
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    status = json.loads(other.stdout)
    assert status["namespace"] == "sticky*"
    assert status["generations"] == {"1": 0, "2": 1, "3": 0, "4+": 0}
    assert [(p["id"], p["state"]) for p in status["proxies"]] == [
        ("10.9.9.9:80", "unhealthy")
    ]
    assert (status["bumps"], status["gave_up"], status["crawlers"]) == (0, 0, [])


def gave_up(url: str, key: str, method: str = "GET", **extra: Any) -> str:
    record = {"url": url, "method": method, "key": key, "reasons": ["http 403"]}
    return json.dumps({**record, "attempts": 1, "time": 1.0, "spider": "s", **extra})


def replay(message: str) -> Any:
    """The request scrapy-redis's RedisSpider makes from a start-URL message."""
    from scrapy_redis.spiders import RedisSpider

    spider = RedisSpider(name="replay")
    spider.redis_encoding = "utf-8"
    return spider.make_request_from_data(message.encode())


def test_requeue_moves_records_in_scrapy_redis_format(
    client: Any, redis_db: str, tmp_path: Path
) -> None:
    records = [
        gave_up("https://example.com/a", "https://example.com/a"),
        gave_up("https://example.com/f", "k1", "POST", body="q=caf%C3%A9&page=2"),
        gave_up(
            "https://example.com/bin", "k2", "POST", body="AAE=", body_encoding="base64"
        ),
        gave_up("https://example.com/b", ""),
    ]
    client.rpush(f"{NS}:gave_up", *records)

    def requeue(*args: str) -> subprocess.CompletedProcess[str]:
        base = ("sticky_proxy", "requeue", "--start-urls-key", "s:start_urls")
        return scrapy(tmp_path, *base, "--redis-url", redis_db, *args)

    dry = requeue("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would push to s:start_urls: ") == 3
    where = "from sticky_proxy:gave_up to s:start_urls (list); 1 kept"
    assert f"Would move 3 record(s) {where}" in dry.stdout
    assert "kept record #2: scrapy-redis cannot send this POST body" in dry.stderr
    assert client.lrange(f"{NS}:gave_up", 0, -1) == records
    assert not client.exists("s:start_urls")

    first = requeue("--limit", "1")
    assert first.returncode == 0, first.stderr
    assert "Moved 1 record(s)" in first.stdout
    assert client.lrange(f"{NS}:gave_up", 0, -1) == records[1:]

    rest = requeue()
    assert rest.returncode == 0, rest.stderr
    assert f"Moved 2 record(s) {where}" in rest.stdout
    assert client.lrange(f"{NS}:gave_up", 0, -1) == [records[2]]
    messages = client.lrange("s:start_urls", 0, -1)
    a, f, b = (f"https://example.com/{path}" for path in "afb")
    assert [json.loads(m) for m in messages] == [
        {"url": a, "method": "GET", "meta": {"sticky_proxy_key": a}},
        {"url": f, "method": "POST", "meta": {"sticky_proxy_key": "k1"}, **FORM},
        {"url": b, "method": "GET"},
    ]
    requests = [replay(m) for m in messages]
    assert [(r.method, r.url, r.body) for r in requests] == [
        ("GET", "https://example.com/a", b""),
        ("POST", "https://example.com/f", b"q=caf%C3%A9&page=2"),
        ("GET", "https://example.com/b", b""),
    ]
    assert requests[1].meta["sticky_proxy_key"] == "k1"
    assert "sticky_proxy_key" not in requests[2].meta


@pytest.mark.parametrize(("setting", "read"), [("SET", "smembers"), ("ZSET", "zrange")])
def test_requeue_to_set_or_zset(
    client: Any, redis_db: str, tmp_path: Path, setting: str, read: str
) -> None:
    record = gave_up("https://example.com/a", "k")
    client.rpush(f"{NS}:gave_up", record)
    result = scrapy(
        tmp_path, "sticky_proxy", "requeue", "--start-urls-key", "q", "--redis-url",
        redis_db, "-s", f"REDIS_START_URLS_AS_{setting}=True",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"({setting.lower()})" in result.stdout
    assert list(getattr(client, read)("q", *([0, -1] if read == "zrange" else []))) == [
        start_url_message(json.loads(record))
    ]
    assert client.llen(f"{NS}:gave_up") == 0


def test_requeue_keeps_record_when_push_fails(
    client: Any, redis_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record = gave_up("https://example.com/a", "k")
    client.rpush(f"{NS}:gave_up", record)
    client.set("q", "not a list")
    code, _, err = scrapy_inline(
        capsys, "requeue", "--start-urls-key", "q", "--redis-url", redis_db
    )
    assert code == 1
    assert "WRONGTYPE" in err and "Traceback" not in err
    assert client.lrange(f"{NS}:gave_up", 0, -1) == [record]


@pytest.mark.parametrize("login", [":hunter2", "hunter2"])
def test_unreachable_redis_hides_password(
    tmp_path: Path, refused_port: Callable[[], int], login: str
) -> None:
    """Also a password written where the user name goes (no colon), a
    common slip: it was shown as written."""
    url = f"redis://{login}@127.0.0.1:{refused_port()}/0"
    result = scrapy(tmp_path, "sticky_proxy", "status", "--redis-url", url)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert_absent("hunter2", output)
    assert "Traceback" not in output
    assert f"Redis at {url.replace('hunter2', '***')}: " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "expected status or requeue"),
        (("stats",), "expected status or requeue, got 'stats'"),
        (("status", "--bogus"), "got 'status --bogus'"),
        (("requeue",), "requeue needs --start-urls-key KEY"),
        (("requeue", "--start-urls-key", "q", "--limit", "0"), "--limit must be"),
        (("requeue", "--start-urls-key", "sticky_proxy:gave_up"), "give-up list"),
    ],
)
def test_usage_errors(
    redis_db: str,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    code, _, err = scrapy_inline(capsys, *args, "--redis-url", redis_db)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_bad_setting_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = scrapy_inline(capsys, "status", "--redis-url", "http://:pw@host/0")
    assert code == 1
    assert err == (
        "scrapy sticky_proxy: error: STICKY_PROXY_REDIS_URL: expected a redis://, "
        "rediss:// or unix:// URL\n"
    )


def test_listed_in_scrapy_help(tmp_path: Path) -> None:
    result = scrapy(tmp_path, "-h")
    assert result.returncode == 0
    assert any(
        line.split()[:1] == ["sticky_proxy"] for line in result.stdout.splitlines()
    )


def test_requeue_keeps_a_country_and_survives_a_deep_record(
    client: Any, redis_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record's country goes with its request (before: dropped, so the
    replay left from any country); one that is no country code is kept. A
    record nested 100,000 deep is kept and named (before: a RecursionError
    traceback, on every later run, the records behind it stuck)."""
    deep = "[" * 100_000 + "]" * 100_000
    records = [
        gave_up("https://example.com/de", "k1", country="DE"),
        deep,
        gave_up("https://example.com/x", "k2", country="a number of 16610 bits"),
        gave_up("https://example.com/b", "k3"),
    ]
    client.rpush(f"{NS}:gave_up", *records)
    code, out, err = scrapy_inline(
        capsys, "requeue", "--start-urls-key", "q", "--redis-url", redis_db
    )
    assert code == 0, err
    assert "Moved 2 record(s)" in out and "2 kept" in out
    assert "kept record #0: maximum recursion depth" in err
    assert "kept record #1: its country is no ISO 3166-1 code" in err
    assert "Traceback" not in err
    assert client.lrange(f"{NS}:gave_up", 0, -1) == records[1:3]
    pushed = [replay(m) for m in client.lrange("q", 0, -1)]
    assert [r.meta.get("sticky_proxy_country") for r in pushed] == ["DE", None]

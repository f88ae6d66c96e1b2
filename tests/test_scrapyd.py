"""Deploying the example project to a real Scrapyd, as the README says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction

from .conftest import assert_absent, crawl
from .servers import ServerProcess, free_port
from .spiders import ItemsSpider
from .test_crawl import settings_for

ROOT = Path(__file__).resolve().parent.parent
PROXY_PASSWORD = "scrapyd-env-only-pw"


@dataclass
class Scrapyd:
    url: str
    home: Path
    server: ServerProcess

    def call(self, endpoint: str, **data: Any) -> dict[str, Any]:
        body = None
        if data:
            pairs = [
                (k, v)
                for k, vs in data.items()
                for v in (vs if isinstance(vs, list) else [vs])
            ]
            body = urllib.parse.urlencode(pairs).encode()
        with urllib.request.urlopen(f"{self.url}/{endpoint}", body, timeout=10) as r:
            return json.load(r)

    def wait_finished(self, job: str, deadline: float = 90) -> None:
        """Poll listjobs.json, as a user's script would, until the job ends."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            jobs = self.call("listjobs.json?project=demo")
            if any(j["id"] == job for j in jobs["finished"]):
                return
            time.sleep(0.2)  # polling interval of an external service's API
        raise AssertionError(f"job {job} did not finish: {jobs}")

    def job_file(self, kind: str, spider: str, job: str, ext: str) -> Path:
        return self.home / kind / "demo" / spider / f"{job}.{ext}"


@pytest.fixture
def gateway_sandbox() -> Iterator[Sandbox]:
    with Sandbox(password=PROXY_PASSWORD) as sb:
        yield sb


@pytest.fixture
def scrapyd(tmp_path: Path, gateway_sandbox: Sandbox) -> Iterator[Scrapyd]:
    home = tmp_path / "scrapyd"
    home.mkdir()
    port = free_port()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\n"
        "bind_address = 127.0.0.1\n"
        f"http_port = {port}\n"
        "poll_interval = 0.2\n"
        "max_proc = 2\n"
        "eggs_dir = eggs\nlogs_dir = logs\nitems_dir = items\ndbs_dir = dbs\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # The credential lives in Scrapyd's environment only: jobs inherit
        # it, schedule.json never carries it.
        "STICKY_PROXY_URL": gateway_sandbox.gateway_url,
    }
    server = ServerProcess(
        "scrapyd", [sys.executable, "-m", "scrapyd"], cwd=home, env=env
    ).wait_ready(f"Site starting on {port}")
    yield Scrapyd(f"http://127.0.0.1:{port}", home, server)
    scrapyd_log = server.stop()
    # Scrapyd logs each job's command line: the password is not on it.
    assert "Process started" in scrapyd_log
    assert_absent(PROXY_PASSWORD, scrapyd_log)


def deploy(scrapyd: Scrapyd, tmp_path: Path) -> None:
    """scrapyd-deploy from a copy of example_project whose target is ours."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "example_project", project)
    cfg = project / "scrapy.cfg"
    cfg.write_text(re.sub(r"url = .*", f"url = {scrapyd.url}/", cfg.read_text()))
    out = subprocess.run(
        ["scrapyd-deploy", "local", "-p", "demo", "--version", "r1"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"status": "ok"' in out.stdout + out.stderr


def read_items(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deploy_and_run_the_sandbox_crawl(
    scrapyd: Scrapyd, gateway_sandbox: Sandbox, tmp_path: Path
) -> None:
    deploy(scrapyd, tmp_path)
    assert "demo" in scrapyd.call("listspiders.json?project=demo")["spiders"]
    job = scrapyd.call(
        "schedule.json",
        project="demo",
        spider="demo",
        # Provider and key policy switched per job; the gateway URL with its
        # password comes from Scrapyd's environment, not from here.
        setting=[
            "STICKY_PROXY_PROVIDER=sandbox",
            "STICKY_PROXY_KEY=url",
            "DEMO_ITEMS=30",
        ],
    )["jobid"]
    scrapyd.wait_finished(job)
    rows = read_items(scrapyd.job_file("items", "demo", job, "jl"))
    assert len([r for r in rows if "title" in r]) == 30
    assert len([r for r in rows if "part" in r]) == 90
    log = scrapyd.job_file("logs", "demo", job, "log").read_text()
    rerolls = re.search(r"'sticky_proxy/rerolls': (\d+)", log)
    assert rerolls and int(rerolls.group(1)) > 0
    assert "'finish_reason': 'finished'" in log
    # Every request went through the gateway named by the environment.
    assert len(gateway_sandbox.gateway.log) == int(
        re.search(r"'sticky_proxy/requests': (\d+)", log).group(1)  # type: ignore[union-attr]
    )
    assert_absent(PROXY_PASSWORD, log)


@deferred_f_from_coro_f
async def test_redis_job_shares_health_with_a_crawl_outside_scrapyd(
    scrapyd: Scrapyd, gateway_sandbox: Sandbox, redis_db: str, tmp_path: Path
) -> None:
    sandbox = gateway_sandbox
    deploy(scrapyd, tmp_path)
    rule = ban_fraction(0.3)
    sandbox.site.ban_rule = rule
    # A crawl outside Scrapyd burns sessions in the namespace the example's
    # Redis mode uses.
    outside = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BACKEND="redis",
            STICKY_PROXY_REDIS_URL=redis_db,
            STICKY_PROXY_NAMESPACE="demo:sticky",
        ),
        base=sandbox.site_url,
        n=40,
        follow=False,
    )
    assert outside.stats["sticky_proxy/bans"] > 0
    burned = {r.session for r in sandbox.gateway.log if rule(r.exit_ip, "")}
    sandbox.reset()
    sandbox.site.ban_rule = rule

    client = redis.Redis.from_url(redis_db)
    client.rpush(
        "demo_redis:start_urls",
        *(json.dumps({"url": f"{sandbox.site_url}/item/{i}"}) for i in range(40)),
    )
    job = scrapyd.call(
        "schedule.json",
        project="demo",
        spider="demo_redis",
        setting=[f"REDIS_URL={redis_db}", "MAX_IDLE_TIME_BEFORE_CLOSE=1"],
    )["jobid"]
    scrapyd.wait_finished(job)

    used = {r.session for r in sandbox.gateway.log}
    assert used and not used & burned, "the job reused a session burned outside"
    rows = read_items(scrapyd.job_file("items", "demo_redis", job, "jl"))
    assert len([r for r in rows if "title" in r]) == 40
    assert len([r for r in rows if "part" in r]) == 120
    log = scrapyd.job_file("logs", "demo_redis", job, "log").read_text()
    assert_absent(PROXY_PASSWORD, log)
    # Neither the job list nor Scrapyd's own log saw the credential.
    assert_absent(
        PROXY_PASSWORD, json.dumps(scrapyd.call("listjobs.json?project=demo"))
    )

"""A real Prometheus (Debian's /usr/bin/prometheus, from `make prometheus`) scraping a
real worker with the project's scrape job and rules.

The config is the production config/prometheus/prometheus.yml with only what cannot
apply here changed: the worker's address, the token file's path, the rules' path, no
Alertmanager, and 1 s intervals so series appear within seconds. Assertions poll the
query API with a deadline; nothing asserts on how fast anything was.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from engine.ops.infra import die_with_parent, free_port
from engine.ops.launcher import WorkerProcess, stop_process
from engine.settings import Settings
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "config" / "prometheus" / "prometheus.yml"
RULES_DIR = ROOT / "config" / "prometheus" / "rules"
PROMETHEUS = "/usr/bin/prometheus"
SENT = 300
WARM_UP = 20
DEADLINE_S = 60.0


# ---- a Prometheus process ------------------------------------------------------------------


@dataclass
class PrometheusProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def values(self, promql: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(promql)]


def scrape_config(
    target: str, token_file: Path, extra_jobs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The production config, re-pointed at one local worker."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    beacon = next(job for job in config["scrape_configs"] if job["job_name"] == "beacon")
    beacon["static_configs"] = [{"targets": [target]}]
    beacon["authorization"]["credentials_file"] = str(token_file)
    # Seconds, not the production 15 s: the test waits for a few scrapes, not minutes.
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["scrape_configs"] = [beacon, *(extra_jobs or [])]
    config.pop("alerting")  # no Alertmanager here; alerts are still evaluated
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    return config


@contextlib.contextmanager
def running_prometheus(
    config: dict[str, Any], workdir: Path, timeout: float = 30.0
) -> Iterator[PrometheusProcess]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} not found: run `make prometheus` (Debian's prometheus package)")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # never outlive the test run
        )
    prom = PrometheusProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for(lambda: _ready(prom), timeout, lambda: f"Prometheus not ready:\n{prom.log()[-3000:]}")
        yield prom
    finally:
        stop_process(proc)


def _ready(prom: PrometheusProcess) -> bool:
    if prom.proc.poll() is not None:
        raise AssertionError(f"Prometheus exited with {prom.proc.returncode}:\n{prom.log()[-3000:]}")
    try:
        return httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    """Poll until ``condition()`` holds; fail with ``why()`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(why())


# ---- traffic --------------------------------------------------------------------------------


def event(i: int, run: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"prom-{run}-{i}",
            "customer_id": f"P{i % 17}",
            "channel": ("internet", "mobile", "atm")[i % 3],
            "type": "login",
            "ts": time.time(),
            "device_id": "laptop",
        }
    )


def send_decisions(worker: WorkerProcess, run: str, numbers: range) -> None:
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        for i in numbers:
            reply = http.post("/v1/decisions", content=event(i, run))
            assert reply.status_code == 200, reply.text


def token_file(directory: Path, token: str) -> Path:
    path = directory / "beacon_metrics_token"
    path.write_text(token + "\n")  # a trailing newline, as secrets usually have; Prometheus trims it
    path.chmod(0o600)
    return path


# ---- tests ----------------------------------------------------------------------------------


def test_prometheus_scrapes_a_worker_and_evaluates_the_rules(
    infra: Settings, logdir: Path, tmp_path: Path
) -> None:
    settings = isolated(infra)
    with running_worker(settings, logdir) as worker:
        target = f"{settings.http_host}:{settings.http_port}"
        # Authentication is off on this worker: the bearer token is sent and ignored.
        config = scrape_config(target, token_file(tmp_path, "unused"))
        with running_prometheus(config, tmp_path) as prom:
            # rate() counts increases between scrapes, and a series is born at its first
            # event: so send a few, wait until they are scraped, then send the rest.
            run = uuid.uuid4().hex[:8]
            send_decisions(worker, run, range(WARM_UP))
            wait_for(
                lambda: bool(prom.query('beacon_decision_latency_seconds_count{path="http"}')),
                DEADLINE_S,
                lambda: f"no latency series scraped; up: {prom.query('up')}",
            )
            send_decisions(worker, run, range(WARM_UP, SENT))

            def seen() -> bool:
                return prom.values('sum(beacon_events_total{outcome="decided"})') == [float(SENT)]

            wait_for(seen, DEADLINE_S, lambda: f"decided events: {prom.query('beacon_events_total')}")
            assert prom.values('up{job="beacon"}') == [1.0]

            p99 = 'histogram_quantile(0.99, sum by (le) (rate(beacon_decision_latency_seconds_bucket{path="http"}[1m])))'
            wait_for(
                lambda: _finite_positive(prom.values(p99)), DEADLINE_S, lambda: f"p99: {prom.query(p99)}"
            )

            # Recording rules from config/prometheus/rules, evaluated by this Prometheus.
            recorded = 'path:beacon_decisions:rate5m{path="http"}'
            wait_for(
                lambda: _finite_positive(prom.values(recorded)), DEADLINE_S, lambda: f"{prom.query(recorded)}"
            )
            p99_rule = 'beacon:decision_latency_seconds:p99_5m{path="http"}'
            wait_for(
                lambda: _finite_positive(prom.values(p99_rule)), DEADLINE_S, lambda: f"{prom.query(p99_rule)}"
            )

            # Every rule evaluates without error against real series (a many-to-many
            # join, say, fails only at evaluation time, never in promtool check rules).
            wait_for(
                lambda: all(r["health"] != "unknown" for r in _rules(prom)),
                DEADLINE_S,
                lambda: "no evaluation",
            )
            broken = {r["name"]: r.get("lastError") for r in _rules(prom) if r["health"] != "ok"}
            assert broken == {}


def test_prometheus_scrapes_with_the_metrics_token_when_auth_is_on(
    infra: Settings, logdir: Path, tmp_path: Path
) -> None:
    secret = "scrape-" + uuid.uuid4().hex
    settings = isolated(infra, auth_required=True, metrics_token=secret)
    with running_worker(settings, logdir) as worker:
        assert httpx.get(f"{worker.url}/metrics", timeout=5).status_code == 401
        target = f"{settings.http_host}:{settings.http_port}"
        (tmp_path / "wrong").mkdir()
        # The same target scraped with a wrong token: proves the right one is what works.
        wrong = {
            "job_name": "wrong-token",
            "authorization": {
                "type": "Bearer",
                "credentials_file": str(token_file(tmp_path / "wrong", "nope")),
            },
            "static_configs": [{"targets": [target]}],
        }
        config = scrape_config(target, token_file(tmp_path, secret), [wrong])
        with running_prometheus(config, tmp_path) as prom:

            def scraped() -> bool:
                return prom.values('up{job="beacon"}') == [1.0] and prom.values('up{job="wrong-token"}') == [
                    0.0
                ]

            wait_for(scraped, DEADLINE_S, lambda: f"up: {prom.query('up')}")
            assert prom.query('beacon_ready{job="beacon"}'), "no worker series scraped with the token"
            assert prom.query('beacon_ready{job="wrong-token"}') == []


def _finite_positive(values: list[float]) -> bool:
    return len(values) == 1 and math.isfinite(values[0]) and values[0] > 0


def _rules(prom: PrometheusProcess) -> list[dict[str, Any]]:
    return [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]

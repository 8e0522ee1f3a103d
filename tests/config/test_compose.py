"""docker-compose.yml, docker-compose.prod.yml and the Dockerfile, checked without Docker.

Both compose files get the same checks (the tests taking the ``compose`` fixture run once
per file); the production file's Redis Cluster and three-node Kafka have checks of their
own at the end. Each compose file is validated against the Compose Specification JSON schema (vendored in
tests/data, see its README), then against Beacon itself: every BEACON_* variable a worker
sets is a real setting, the worker command is a real ``beacon`` subcommand, the topics the
init service creates are the ones the engine uses. Then against the files around it: the
bind-mounted configuration exists, Prometheus scrapes services and ports that exist, Grafana
reads the Prometheus service, .env.example names every variable the file needs, and the
README's table of settings lists every setting.
"""

from __future__ import annotations

import argparse
import ipaddress
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
from engine.errors import ConfigError
from engine.ops.infra import topic_names
from engine.rules.pack import read_bundle
from engine.settings import SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROD_COMPOSE_FILE = ROOT / "docker-compose.prod.yml"
COMPOSE_FILES = (COMPOSE_FILE, PROD_COMPOSE_FILE)
# The workers each file runs, all in one consumer group.
EXPECTED_WORKERS = {
    COMPOSE_FILE.name: {"worker-1", "worker-2"},
    PROD_COMPOSE_FILE.name: {"worker-1", "worker-2", "worker-3"},
}
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
README_SECTION = "Running in production (docker compose)"
# The production file is described in a subsection of README_SECTION.
README_PROD_SUBSECTION = "Production compose (Redis Cluster)"
# The commands each file's README text must show.
README_COMMANDS = {
    COMPOSE_FILE.name: ("cp .env.example .env", "docker compose up -d --build"),
    PROD_COMPOSE_FILE.name: (
        "cp .env.example .env",
        "docker compose -f docker-compose.prod.yml up -d --build",
    ),
}
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "config" / "grafana" / "provisioning"

SETTING_VARS = {"BEACON_" + f.name.upper() for f in fields(Settings)} | {"BEACON_CONFIG"}
# A secret may come from a file instead (Docker secrets): BEACON_<NAME>_FILE.
SETTING_VARS |= {"BEACON_" + name.upper() + "_FILE" for name in SECRET_FIELDS}
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


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} must be a mapping"
    return data


@pytest.fixture(scope="module", params=COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def compose_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="module")
def compose(compose_file: Path) -> dict[str, Any]:
    return load_compose(compose_file)


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


def settings_env(service: dict[str, Any]) -> dict[str, str]:
    """The environment Settings.build sees in the container: a ``BEACON_<SECRET>_FILE``
    (a Docker secret the service mounts) stands for the secret itself."""
    env = env_of(service)
    mounted = {
        f"/run/secrets/{e['source'] if isinstance(e, dict) else e}" for e in service.get("secrets") or []
    }
    for name in SECRET_FIELDS:
        path = env.pop(f"BEACON_{name.upper()}_FILE", None)
        if path is not None:
            assert path in mounted, f"BEACON_{name.upper()}_FILE={path}: not a secret the service mounts"
            env.setdefault(f"BEACON_{name.upper()}", "from-the-secret-file")
    return env


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


def has_image(service: dict[str, Any], name: str) -> bool:
    return re.match(rf"{re.escape(name)}[:@]", str(service.get("image", ""))) is not None


def kafka_brokers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Kafka nodes (long-running services of the Kafka image; not the one-shot init)."""
    return {n: s for n, s in services.items() if has_image(s, "apache/kafka") and s.get("restart") != "no"}


def redis_nodes(services: dict[str, dict[str, Any]], one_shot: bool = False) -> dict[str, dict[str, Any]]:
    """The Redis servers, or with one_shot the jobs run from the Redis image (a cluster's init)."""
    return {
        n: s for n, s in services.items() if has_image(s, "redis") and (s.get("restart") == "no") == one_shot
    }


def script_of(service: dict[str, Any]) -> str:
    """A service's command as one text (a shell script is usually one item of a list)."""
    command = service.get("command") or ""
    return command if isinstance(command, str) else "\n".join(map(str, command))


def redis_server_options(service: dict[str, Any]) -> dict[str, str]:
    """The --option value pairs redis-server is started with, from an argument list or a
    shell script that ends by exec'ing it (a config file before the options is skipped)."""
    tokens = shlex.split(script_of(service).replace("\\\n", " "))
    assert "redis-server" in tokens, "the service does not start redis-server"
    rest = tokens[tokens.index("redis-server") + 1 :]
    if rest and rest[0].endswith(".conf"):
        rest = rest[1:]
    options = {}
    while len(rest) >= 2 and rest[0].startswith("--"):
        options[rest[0][2:]] = rest[1]
        rest = rest[2:]
    return options


def is_prometheus(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(("prom/prometheus:", "prom/prometheus@"))


def listening_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service's container listens on: the ones it publishes or exposes, and for
    a Beacon process the port its settings serve (the API, or the trainer's /metrics)."""
    ports = {container for _, container in published_ports(service)}
    ports |= {int(str(port).split("/", 1)[0]) for port in service.get("expose") or []}
    if "build" in service:
        settings = Settings.build(env=settings_env(service))
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


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any], compose_file: Path) -> None:
    errors = schema_errors(compose)
    assert not errors, f"{compose_file.name} does not follow the Compose Specification:\n" + "\n".join(errors)


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
    with_data = {
        name
        for name, svc in services.items()
        if svc.get("restart") != "no"
        and any(
            has_image(svc, i)
            for i in ("apache/kafka", "redis", "prom/prometheus", "prom/alertmanager", "grafana/grafana")
        )
    }
    assert {"prometheus", "alertmanager", "grafana"} <= with_data
    assert kafka_brokers(services) and redis_nodes(services), "no Kafka or no Redis"
    assert with_data <= stateful, (
        f"every service with data to keep needs a named volume: {sorted(with_data - stateful)}"
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


def test_the_workers_are_in_one_consumer_group(
    workers: dict[str, dict[str, Any]], compose_file: Path
) -> None:
    assert set(workers) == EXPECTED_WORKERS[compose_file.name]
    app_ids = {env_of(w).get("BEACON_APP_ID", Settings().app_id) for w in workers.values()}
    assert len(app_ids) == 1, f"workers must share BEACON_APP_ID (one consumer group), got {app_ids}"


def test_beacon_env_vars_are_beacon_settings(beacon_services: dict[str, dict[str, Any]]) -> None:
    assert {"worker-1", "worker-2", "trainer"} <= set(beacon_services)
    for name, svc in beacon_services.items():
        env = env_of(svc)
        unknown = sorted(set(env) - SETTING_VARS)
        assert not unknown, f"{name} sets variables that are not Beacon settings: {unknown}"
        Settings.build(env=settings_env(svc))  # raises ConfigError on a bad value


def test_worker_env_builds_valid_settings(
    workers: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    for name, worker in workers.items():
        settings = Settings.build(env=settings_env(worker))  # raises ConfigError on a bad value
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
    needed = set(kafka_brokers(services)) | {"kafka-init"} | set(redis_nodes(services))
    needed |= set(redis_nodes(services, one_shot=True))  # a Redis Cluster's init
    beacon = [name for name, svc in services.items() if "build" in svc]
    assert {"worker-1", "worker-2", "trainer"} <= set(beacon)
    for worker in beacon:
        missing = needed - set(depends_on(services[worker]))
        assert not missing, f"{worker} does not wait for {sorted(missing)}"
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
    partitions |= {Settings.build(env=settings_env(w)).partitions for w in workers.values()}
    assert len(partitions) == 1, f"workers' BEACON_PARTITIONS must match the topics: {partitions}"
    assert "--if-not-exists" in script, "topic creation must be idempotent"


def script_flag(script: str, flag: str, env: dict[str, str]) -> str | None:
    """The value a script passes to flag, a literal or "$$VAR" resolved from env."""
    m = re.search(rf"{re.escape(flag)}[ =]\"?(\$\$\w+|[\w.]+)\"?", script)
    if m is None:
        return None
    value = m[1]
    return env[value[2:]] if value.startswith("$$") else value


def test_topics_are_replicated_as_the_brokers_allow(services: dict[str, dict[str, Any]]) -> None:
    brokers = kafka_brokers(services)
    init = services["kafka-init"]
    script = script_of(init)
    replication = int(script_flag(script, "--replication-factor", env_of(init)) or 0)
    assert 1 <= replication <= len(brokers), f"replication factor {replication} with {len(brokers)} brokers"
    min_isr_topic = script_flag(script, "min.insync.replicas", env_of(init))
    for name, broker in brokers.items():
        env = env_of(broker)
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == replication, name
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == replication, name
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == replication, name
        for min_isr in (env["KAFKA_MIN_INSYNC_REPLICAS"], min_isr_topic or env["KAFKA_MIN_INSYNC_REPLICAS"]):
            # Below the replication factor (when there is more than one copy), or one node
            # down stops every acks=all producer.
            assert int(min_isr) == 1 if replication == 1 else 1 < int(min_isr) < replication, name


def test_redis_keeps_state_durably_and_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    for name, node in redis_nodes(services).items():
        options = redis_server_options(node)
        assert options.get("appendonly") == "yes", f"{name}: AOF persistence off"
        assert options.get("appendfsync") in {"everysec", "always"}, name
        # Beacon's state must not be silently evicted: a full Redis refuses writes instead.
        assert options.get("maxmemory-policy") == "noeviction", f"{name}: maxmemory-policy noeviction"
        assert options.get("maxmemory"), f"{name}: set maxmemory (below the container's limit)"


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
    # The image binds 0.0.0.0, so the deployment must give it the record signing key (a
    # secret, never in the image): without one it refuses to start.
    with pytest.raises(ConfigError, match="record_signing_key"):
        Settings.build(env=env)
    Settings.build(env={**env, "BEACON_RECORD_SIGNING_KEY_FILE": __file__})


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


def prometheus_config_file(services: dict[str, dict[str, Any]]) -> Path:
    """The repository file the Prometheus service reads as its --config.file."""
    prometheus = services[prometheus_name(services)]
    flags = [arg for arg in command_of(prometheus) if arg.startswith("--config.file=")]
    in_container = flags[-1].partition("=")[2] if flags else "/etc/prometheus/prometheus.yml"
    path = repo_path(prometheus, in_container)
    assert path is not None, f"Prometheus' {in_container} is not bind-mounted from the repository"
    return path.resolve()


def test_prometheus_configs_are_the_ones_the_compose_files_mount() -> None:
    mounted = {prometheus_config_file(load_compose(f)["services"]) for f in COMPOSE_FILES}
    assert PROMETHEUS_CONFIG.resolve() in mounted
    assert mounted == {p.resolve() for p in PROMETHEUS_CONFIG.parent.glob("prometheus*.yml")}, (
        "a Prometheus configuration no compose file mounts (or one missing)"
    )


@pytest.fixture(scope="module")
def prometheus_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    path = prometheus_config_file(services)
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} missing (the bind-mount test fails for it)")
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


@pytest.mark.parametrize(
    ("targets", "alertmanagers", "wrong"),
    [
        (["worker-1:6066", "worker-2:6066", "trainer:6068", "localhost:9090"], ["alertmanager:9093"], 0),
        (["worker-9:6066"], [], 1),  # no such service
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
    text = prometheus_config_file(services).read_text()
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


def variables_needed(compose: dict[str, Any]) -> set[str]:
    """Variables the file interpolates, and those its secrets are read from."""
    return set(compose_variables(compose)) | {
        str(s["environment"]) for s in (compose.get("secrets") or {}).values() if "environment" in s
    }


def test_env_example_names_every_variable_compose_reads(compose: dict[str, Any]) -> None:
    example = env_example()
    variables = compose_variables(compose)
    secret_vars = {
        str(s["environment"]) for s in (compose.get("secrets") or {}).values() if "environment" in s
    }
    needed = variables_needed(compose)
    assert needed <= set(example), f"missing from .env.example: {sorted(needed - set(example))}"
    # One .env.example serves both compose files: each of its variables is read by one.
    all_needed = set().union(*(variables_needed(load_compose(f)) for f in COMPOSE_FILES))
    assert set(example) <= all_needed, (
        f".env.example names what no compose file reads: {sorted(set(example) - all_needed)}"
    )
    required = {name for name, req in variables.items() if req}
    assert {"BEACON_SIGNING_KEY_PEM", "BEACON_METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD"} <= required
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


def readme_subsection(section: str, title: str) -> str:
    heading = f"\n### {title}\n"
    assert heading in section, f"README.md has no subsection '### {title}' in '## {README_SECTION}'"
    start = section.index(heading) + 1
    end = section.find("\n### ", start)
    return section[start : end if end != -1 else len(section)]


def test_readme_describes_every_service(services: dict[str, dict[str, Any]], compose_file: Path) -> None:
    section = readme_section(README_SECTION)
    if compose_file == PROD_COMPOSE_FILE:
        section = readme_subsection(section, README_PROD_SUBSECTION)
    described = {name for row in table_rows(section) for name in re.findall(r"`([\w-]+)`", row[0])}
    assert set(services) <= described, f"README: services not described: {sorted(set(services) - described)}"
    for command in README_COMMANDS[compose_file.name]:
        assert command in section


# ---- (f) docker-compose.prod.yml: Redis Cluster and a three-node Kafka -----------------


@pytest.fixture(scope="module")
def prod() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_compose(PROD_COMPOSE_FILE)["services"]
    return services


def test_prod_runs_six_redis_cluster_nodes(prod: dict[str, dict[str, Any]]) -> None:
    nodes = redis_nodes(prod)
    assert sorted(nodes) == [f"redis-{i}" for i in range(1, 7)], "3 masters + 3 replicas = 6 nodes"
    for name, node in nodes.items():
        options = redis_server_options(node)
        assert options.get("cluster-enabled") == "yes", f"{name}: --cluster-enabled yes"
        assert options.get("port") == "6379", name
        assert "redis_password" in (node.get("secrets") or []), f"{name}: needs the redis_password secret"
        script = script_of(node)
        # requirepass for clients, masterauth for a replica to sync from its master (and a
        # promoted master's old master to follow it), both read from the secret.
        for directive in ("requirepass", "masterauth"):
            assert directive in script, f"{name}: no {directive}"
        assert "/run/secrets/redis_password" in script
        assert "/run/secrets/redis_password" in " ".join(node["healthcheck"]["test"]), (
            f"{name}: the health check must authenticate"
        )


def test_prod_redis_nodes_have_fixed_distinct_addresses() -> None:
    compose = load_compose(PROD_COMPOSE_FILE)
    ipam = compose["networks"]["default"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.IPv4Network(ipam["subnet"]), ipaddress.IPv4Network(ipam["ip_range"])
    assert dynamic.subnet_of(subnet)
    addresses = {
        name: ipaddress.ip_address(node["networks"]["default"]["ipv4_address"])
        for name, node in redis_nodes(compose["services"]).items()
    }
    assert len(set(addresses.values())) == len(addresses), "two nodes share an address"
    for name, address in addresses.items():
        assert address in subnet and address not in dynamic, (
            f"{name}: {address} outside {subnet} or in ip_range"
        )
        assert address not in {subnet.network_address, subnet.network_address + 1, subnet.broadcast_address}


def test_prod_cluster_init_forms_the_cluster_once(prod: dict[str, dict[str, Any]]) -> None:
    inits = redis_nodes(prod, one_shot=True)
    assert list(inits) == ["redis-cluster-init"]
    init = inits["redis-cluster-init"]
    nodes = redis_nodes(prod)
    assert {n: s.get("condition") for n, s in depends_on(init).items()} == dict.fromkeys(
        nodes, "service_healthy"
    )
    env = env_of(init)
    assert sorted(env["NODES"].split()) == sorted(f"{n}:6379" for n in nodes), "every node joins the cluster"
    replicas = int(env["REPLICAS"])
    assert replicas == 1 and len(nodes) // (replicas + 1) == 3, "3 masters, one replica each"
    script = script_of(init)
    assert re.search(
        r'redis-cli --cluster create \$\$NODES --cluster-replicas "\$\$REPLICAS" --cluster-yes', script
    )
    # Idempotent: a formed cluster (redis-1 knows other nodes) is not created again.
    guard, create = script.find("cluster_known_nodes"), script.find("--cluster create")
    assert -1 < guard < create, "check whether the cluster is already formed before creating it"
    assert "cluster_state:ok" in script, "finish only once every slot is served"
    assert "redis_password" in (init.get("secrets") or []) and "REDISCLI_AUTH" in script


def test_prod_beacon_processes_use_the_cluster_once_formed(prod: dict[str, dict[str, Any]]) -> None:
    beacon = {name: svc for name, svc in prod.items() if "build" in svc}
    assert set(beacon) == EXPECTED_WORKERS[PROD_COMPOSE_FILE.name] | {"trainer"}
    for name, svc in beacon.items():
        settings = Settings.build(env=settings_env(svc))
        assert settings.redis_cluster, f"{name}: set BEACON_REDIS_CLUSTER"
        assert redis_url_parts(settings.redis_url)[1] in redis_nodes(prod), f"{name}: name a cluster node"
        deps = depends_on(svc)
        assert deps.get("redis-cluster-init", {}).get("condition") == "service_completed_successfully", (
            f"{name} must wait for the cluster to be formed"
        )
        # The slot groups are fixed for the life of the data: every process uses the same.
        assert len({Settings.build(env=settings_env(s)).redis_slot_groups for s in beacon.values()}) == 1


def test_prod_kafka_is_three_nodes_with_one_quorum(prod: dict[str, dict[str, Any]]) -> None:
    brokers = kafka_brokers(prod)
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    envs = {name: env_of(b) for name, b in brokers.items()}
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1, "one CLUSTER_ID for the three nodes"
    ids = {name: e["KAFKA_NODE_ID"] for name, e in envs.items()}
    assert len(set(ids.values())) == 3
    voters = {f"{ids[name]}@{name}:9093" for name in brokers}
    for name, env in envs.items():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"SASL_PLAINTEXT://{name}:9092", name
    for name, svc in prod.items():
        if "build" in svc:
            bootstrap = Settings.build(env=settings_env(svc)).kafka_bootstrap.split(",")
            assert sorted(bootstrap) == sorted(f"{b}:9092" for b in brokers), (
                f"{name}: bootstrap every broker"
            )


def redis_url_parts(url: str) -> tuple[str, str]:
    """(password, host) of a Redis URL as written in the file: the password may be a
    ${VAR:?message} interpolation, which urlsplit cannot take apart ('?' starts a query)."""
    m = re.match(r"^rediss?://(?:(?P<auth>.*)@)?(?P<host>[^:/@]+)", url)
    assert m, f"not a Redis URL: {url!r}"
    return (m["auth"] or "").partition(":")[2], m["host"]


SECRET_VALUE = re.compile(r"\$\{[A-Za-z_]\w*:\?[^}]+\}")


def test_prod_holds_no_secret_literal() -> None:
    compose = load_compose(PROD_COMPOSE_FILE)
    # Secrets come from the environment (.env, not committed), never from a file beside it.
    for name, secret in (compose.get("secrets") or {}).items():
        assert set(secret) == {"environment"}, f"secret {name}: read it from .env (environment:)"
    secret_vars = {"BEACON_" + f.upper() for f in SECRET_FIELDS}
    for name, svc in compose["services"].items():
        for var, value in env_of(svc).items():
            if var == "BEACON_REDIS_URL":
                password = redis_url_parts(value)[0]
                assert not password or SECRET_VALUE.fullmatch(password), (
                    f"{name}: the Redis URL's password must be ${{VAR:?...}} (or none: an ACL user)"
                )
            elif var.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), f"{name}: {var} must name a Docker secret"
            elif value.startswith("/run/secrets/"):
                continue  # a file Compose mounts from a secret: a path, not the secret
            elif var in secret_vars or re.search(r"PASSWORD|SECRET|TOKEN|KEY", var):
                assert not value or SECRET_VALUE.fullmatch(value), f"{name}: {var} must be ${{VAR:?...}}"
    for text in strings_in(compose):
        # A password on a command line shows in `ps` and `docker inspect`.
        assert not re.search(r"--(requirepass|masterauth)\b|redis-cli[^\n]*\s-a\s", text), text
        for m in re.finditer(r"\b(requirepass|masterauth)\s+([^\s\\]+)", text):
            assert m[2] in {'"%s"', "%s"}, f"{m[1]} is given a value in the file: {m[2]}"


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_only_the_trainer_holds_the_private_signing_key(path: Any) -> None:
    services = load_compose(path)["services"]
    holders = {n for n, svc in services.items() if "beacon_signing_key" in (svc.get("secrets") or [])}
    assert holders == {"trainer"}
    for name, svc in services.items():
        env = env_of(svc)
        if svc.get("image") == "beacon:local" or "BEACON_SIGNING_PUBLIC_KEYS" in env:
            assert "beacon_signing_public_key" in (svc.get("secrets") or []), name
            assert env.get("BEACON_SIGNING_PUBLIC_KEYS") == "/run/secrets/beacon_signing_public_key"
            assert bool(env.get("BEACON_SIGNING_KEY_FILE")) == (name == "trainer"), name
            assert "BEACON_MODEL_SIGNING_KEY" not in env


# ---- (g) credentials: Redis ACL users and Kafka SASL/SCRAM principals (both files) ----


def test_each_beacon_process_has_its_own_redis_user_and_kafka_principal(
    services: dict[str, dict[str, Any]], workers: dict[str, dict[str, Any]]
) -> None:
    seen = {}
    for name, svc in {**workers, "trainer": services["trainer"]}.items():
        settings = Settings.build(env=settings_env(svc))
        assert settings.redis_username and settings.redis_password, f"{name}: no Redis ACL user"
        assert settings.kafka_security_protocol == "SASL_PLAINTEXT", name
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512", name
        env = env_of(svc)
        assert "BEACON_REDIS_PASSWORD" not in env and "BEACON_KAFKA_SASL_PASSWORD" not in env, (
            f"{name}: passwords come from /run/secrets files, not the environment"
        )
        assert not redis_url_parts(settings.redis_url)[0], f"{name}: no password in the Redis URL"
        seen[name] = (settings.redis_username, settings.kafka_sasl_username)
    assert {seen[w] for w in workers} == {("beacon-worker", "beacon-worker")}
    assert seen["trainer"] == ("beacon-trainer", "beacon-trainer")


def test_redis_loads_the_acl_users_with_hashed_secrets(services: dict[str, dict[str, Any]]) -> None:
    from engine.ops.redisacl import acl_file

    nodes = redis_nodes(services)
    assert nodes
    for name, node in nodes.items():
        script = script_of(node)
        assert "./config/redis/users.acl:/etc/redis/users.acl:ro" in node["volumes"], name
        # A single Redis loads the file; cluster nodes append its users to their config.
        assert redis_server_options(node).get("aclfile") == "/tmp/users.acl" or ">> /tmp/auth.conf" in script
        assert "sha256sum" in script and "/#<redis_/d" in script, f"{name}: a placeholder must not load"
        secrets = [e for e in node["secrets"] if e.startswith("redis_") and e != "redis_password"]
        assert {"redis_worker_password", "redis_trainer_password"} <= set(secrets), name
        for secret in secrets:
            assert f"#<{secret}>" in acl_file("beacon"), f"{secret}: no user of the ACL file"


def test_kafka_listeners_use_sasl_and_the_authorizer_denies_by_default(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, kafka in kafka_brokers(services).items():
        env = env_of(kafka)
        protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
            assert protocols[listener.split("://")[0]] == "SASL_PLAINTEXT", f"{name}: {listener}"
        assert "SCRAM-SHA-512" in env["KAFKA_SASL_ENABLED_MECHANISMS"].split(","), name
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer"), name
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false", name
        assert "--command-config" in " ".join(kafka["healthcheck"]["test"]), name
        assert "/run/secrets/kafka_admin_password" in script_of(kafka), name


def test_kafka_init_creates_scram_users_and_acls_on_every_topic(services: dict[str, dict[str, Any]]) -> None:
    init = services["kafka-init"]
    script = script_of(init)
    users = set(re.findall(r"^\s*scram\s+(\S+)\s+(\S+)", script, flags=re.MULTILINE))
    assert {u for u, _ in users} == {"beacon-worker", "beacon-trainer", "beacon-cli"}
    assert {s for _, s in users} <= set(init["secrets"])
    assert "SCRAM-SHA-512=[" in script and "kafka-acls.sh" in script
    created = set(re.findall(r"^\s*create\s+(\S+)", script, flags=re.MULTILINE))
    grants = kafka_grants(script)
    granted = {topic for _, _, topic in grants}
    assert created <= granted, f"topics no principal may use: {sorted(created - granted)}"
    trainer = {(op, t) for user, op, t in grants if user == "beacon-trainer"}
    assert trainer == {
        ("Read", "decisions.audit"),
        ("Read", "feedback"),
        ("Write", "decisions.audit.dlq"),
        ("Write", "feedback.dlq"),
    }
    worker = {(op, t) for user, op, t in grants if user == "beacon-worker"}
    assert ("Read", "interactions") in worker
    # Offer reports read decisions.audit back: the worker's route and the operator's CLI.
    assert ("Read", "decisions.audit") in worker and ("beacon-cli", "Read", "decisions.audit") in grants
    # Backtests (the worker's GET /v1/reports/backtest, beacon backtest) read the fraud labels too.
    assert ("Read", "feedback") in worker and ("beacon-cli", "Read", "feedback") in grants
    # A worker starts by checking every topic exists (ensure_topics): it must see them all.
    seen = {t for op, t in worker if op in {"Describe", "Read", "Write"}}
    engine_topics = set(topic_names(Settings()))
    assert engine_topics <= seen, f"the worker cannot see {sorted(engine_topics - seen)}"


def kafka_grants(script: str) -> set[tuple[str, str, str]]:
    """(principal, operation, topic) for each ``acl`` line of kafka-init, loops unrolled."""
    flat = re.sub(r"; do\s*\n\s*", "; do ", script.replace("\\\n", " "))
    grants = set()
    for line in flat.splitlines():
        loop = re.match(r"\s*for t in (.+?); do (.*?)(?:; done)?$", line)
        topics, body = (loop[1].split(), loop[2]) if loop else ([], line)
        m = re.match(r"\s*acl (\S+) (.*)--topic (\S+)", body)
        if not m:
            continue
        for topic in topics or [m[3]]:
            for op in re.findall(r"--operation (\w+)", m[2]):
                grants.add((m[1], op, topic.strip('"')))
    return grants

# syntax=docker/dockerfile:1
# Beacon worker image: one Faust worker (agents + HTTP API) per container.
# All configuration comes from BEACON_* environment variables (see engine/settings.py);
# docker-compose.yml shows a production-shaped deployment.
#
#   docker build -t beacon .
#   docker run --rm -e BEACON_REDIS_URL=redis://redis:6379/0 \
#       -e BEACON_KAFKA_BOOTSTRAP=kafka:9092 -p 6066:6066 beacon

# ---- build: install the project and its pinned dependencies into a virtualenv ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/beacon
ENV PATH=/opt/beacon/bin:$PATH

WORKDIR /src
# The project is installed exactly at the versions the tests ran with: constraints.txt pins
# every direct and transitive dependency.
COPY pyproject.toml constraints.txt README.md ./
COPY engine ./engine
COPY agents ./agents
COPY models ./models
COPY loadtest ./loadtest
RUN pip install -c constraints.txt . \
    && beacon --help >/dev/null

# ---- runtime: slim image, no build context, non-root ----
FROM python:3.11-slim

LABEL org.opencontainers.image.title="beacon" \
      org.opencontainers.image.description="Real-time next-best-action and risk decision engine"

ENV PATH=/opt/beacon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BEACON_HTTP_HOST=0.0.0.0 \
    BEACON_HTTP_PORT=6066 \
    BEACON_DATA_DIR=/var/lib/beacon

RUN groupadd --system --gid 10001 beacon \
    && useradd --system --uid 10001 --gid beacon --home-dir /var/lib/beacon \
       --shell /usr/sbin/nologin beacon \
    && mkdir -p /var/lib/beacon \
    && chown beacon:beacon /var/lib/beacon

COPY --from=build /opt/beacon /opt/beacon
# The rule packs the first worker publishes when Redis holds no rules version yet
# (engine/service/rulewatch.py). An installed package cannot find the repository's rules/ folder
# (its default), so the image carries the packs and points BEACON_RULES_DIR at them;
# without them no worker ever becomes ready. Owned by root: read-only to the worker.
COPY rules /opt/beacon/rules
ENV BEACON_RULES_DIR=/opt/beacon/rules

WORKDIR /var/lib/beacon
USER beacon:beacon

EXPOSE 6066

# Liveness: the worker's web server answers. No curl in slim images, so Python does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BEACON_HTTP_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["beacon"]
CMD ["worker"]

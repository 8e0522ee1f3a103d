"""How every Kafka client of Beacon authenticates: one place for the Faust app, the
aiokafka producers and consumers (agents/bulk.py, agents/trainer.py, the CLI) and the
admin client (engine/ops/infra.py).

>>> from engine.settings import Settings
>>> kafka_auth(Settings())
{}
>>> opts = kafka_auth(Settings(kafka_security_protocol="SASL_PLAINTEXT",
...     kafka_sasl_username="beacon-worker", kafka_sasl_password="pw"))
>>> sorted(opts), opts["sasl_mechanism"]
(['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol'], 'SCRAM-SHA-512')
"""

from __future__ import annotations

from typing import Any

from engine.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def kafka_auth(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client: none for PLAINTEXT, else the SASL ones.
    (SASL_SSL takes the system's CA store: aiokafka builds the default context.)"""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password,
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context()
    return options

"""A Kafka transport with a configurable consumer fetch wait.

faust-streaming 0.15.3 hard-codes ``fetch_max_wait_ms=1500`` when it builds the
worker's aiokafka consumer (there is no setting for it), which makes every decision
wait on fetch. This subclass builds the consumer as Faust does and then sets the fetch
wait from ``app.beacon_fetch_max_wait_ms`` (Settings.fetch_max_wait_ms, default 5 ms)
before the consumer starts. It is registered as the ``beacon://`` broker scheme.
"""

from __future__ import annotations

from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_MAX_WAIT_MS = 5


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this value to its Fetcher when the consumer starts.
        consumer._fetch_max_wait_ms = int(
            getattr(self.app, "beacon_fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        )
        return consumer


class LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> LowLatencyConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = LowLatencyConsumer


def register() -> None:
    drivers.TRANSPORTS.data["beacon"] = f"{__name__}:Transport"

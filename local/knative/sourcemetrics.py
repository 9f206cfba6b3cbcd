"""`GET /metrics` of the triggers process: what the KafkaSource emulator sees.

Consumer lag per group (records behind the high watermark of the last
fetch), deliveries, retries and dead letters per function. In a cluster the
KafkaSource dispatcher and KEDA export lag themselves; these are the local
equivalents, one process, so no multiprocess mode is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from local.knative.kafkasource import KafkaSourceEmulator


class SourceMetrics:
    """A prometheus-client collector over the emulator's counters, read at scrape time."""

    def __init__(self, emulator: Callable[[], KafkaSourceEmulator | None]) -> None:
        self.emulator = emulator

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        emulator = self.emulator()
        if emulator is None:
            return
        lag = GaugeMetricFamily("marketplace_kafkasource_lag",
                                "Records not yet handled, per consumer group",
                                labels=["consumer_group"])
        for group, behind in sorted(emulator.lag().items()):
            lag.add_metric([group], behind)
        yield lag
        dead = CounterMetricFamily("marketplace_dead_letters",
                                   "Records put on the dead-letter topic, per function",
                                   labels=["function"])
        deliveries = CounterMetricFamily("marketplace_kafkasource_deliveries",
                                         "Records delivered, and attempts retried, per function",
                                         labels=["function", "result"])
        for target, stats in sorted(emulator.stats().items()):
            dead.add_metric([target], stats.dead_lettered)
            deliveries.add_metric([target, "delivered"], stats.delivered)
            deliveries.add_metric([target, "retried"], stats.retried)
        yield dead
        yield deliveries


def exposition(collector: SourceMetrics) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST

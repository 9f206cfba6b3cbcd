"""The emulator's consumer lag (GET /metrics) follows the batches it delivered, asking the
consumer for a partition's position only until that partition delivers something."""

from __future__ import annotations

from dataclasses import dataclass, field

from local.knative.kafkasource import _Positions


@dataclass
class Record:
    offset: int


@dataclass
class Consumer:
    """What `_Positions.lag` reads of a kafka-python consumer."""

    high: dict[str, int]
    position_at: dict[str, int]
    asked: list[str] = field(default_factory=list)

    def assignment(self) -> set[str]:
        return set(self.high)

    def highwater(self, tp: str) -> int | None:
        return self.high.get(tp)

    def position(self, tp: str) -> int:
        self.asked.append(tp)
        return self.position_at[tp]


def test_lag_is_the_high_watermark_minus_what_was_delivered() -> None:
    consumer = Consumer(high={"a-0": 10, "a-1": 4}, position_at={"a-0": 3, "a-1": 4})
    positions = _Positions()
    assert positions.lag(consumer) == 7  # 10 - 3, and a-1 is caught up
    assert sorted(consumer.asked) == ["a-0", "a-1"]

    positions.delivered({"a-0": [Record(3), Record(4), Record(5)]})
    assert positions.lag(consumer) == 4  # 10 - 6
    consumer.high["a-1"] = 9
    assert positions.lag(consumer) == 9  # the idle partition's position is remembered
    assert len(consumer.asked) == 2  # no more position() calls


def test_a_rebalance_forgets_the_partitions_given_away() -> None:
    consumer = Consumer(high={"a-0": 10, "a-1": 5}, position_at={"a-0": 3, "a-1": 0})
    positions = _Positions()
    positions.delivered({"a-0": [Record(8)], "a-1": [Record(4)]})
    assert positions.lag(consumer) == 1
    consumer.high = {"a-0": 10}  # a-1 went to another member
    assert positions.lag(consumer) == 1
    consumer.high = {"a-0": 10, "a-1": 5}  # and came back, maybe rewound: ask again
    assert positions.lag(consumer) == 1 + 5
    assert consumer.asked == ["a-1"]

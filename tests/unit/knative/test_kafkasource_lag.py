"""The emulator's consumer lag (GET /metrics) follows the batches it delivered, asking the
consumer for a partition's position only until that partition delivers something; its
commits name the offsets delivered, never a consumer's position past a batch in flight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

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


def test_another_assignment_forgets_the_partitions_given_away() -> None:
    consumer = Consumer(high={"a-0": 10, "a-1": 5}, position_at={"a-0": 3, "a-1": 0})
    positions = _Positions()
    positions.delivered({"a-0": [Record(8)], "a-1": [Record(4)]})
    assert positions.lag(consumer) == 1
    consumer.high = {"a-0": 10}  # a-1 went to another member
    assert positions.lag(consumer) == 1
    consumer.high = {"a-0": 10, "a-1": 5}  # and came back, maybe rewound: ask again
    assert positions.lag(consumer) == 1 + 5
    assert consumer.asked == ["a-1"]


@dataclass
class Committing:
    """What `_Positions.commit` uses of a kafka-python consumer."""

    fail: bool = False
    commits: list[dict[str, int]] = field(default_factory=list)

    def commit(self, offsets: dict[str, Any]) -> None:
        if self.fail:
            raise KafkaError("coordinator away")
        self.commits.append({tp: o.offset for tp, o in offsets.items()})


def test_commits_name_the_delivered_offsets_once_and_keep_them_when_a_commit_fails() -> None:
    positions, consumer = _Positions(), Committing()
    assert not positions.uncommitted
    positions.delivered({"a-0": [Record(3), Record(4)], "a-1": []})
    consumer.fail = True
    with pytest.raises(KafkaError):
        positions.commit(consumer)
    assert positions.uncommitted  # kept for the next commit
    consumer.fail = False
    positions.commit(consumer)
    assert consumer.commits == [{"a-0": 5}]  # the next offset to deliver, nothing else
    assert not positions.uncommitted
    positions.delivered({"a-1": [Record(7)]})
    positions.commit(consumer)
    assert consumer.commits[-1] == {"a-1": 8}  # only what was delivered since

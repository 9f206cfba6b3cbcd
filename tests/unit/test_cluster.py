"""The functions' Elasticsearch calls on elastic_transport: the requests the client would send,
errors named by their type (the index setup tells "already exists" from a failure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from shared.adapters import search
from shared.adapters.cluster import SERVERLESS_API_VERSION, Cluster, ClusterError


@dataclass
class Meta:
    status: int


class FakeTransport:
    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, dict[str, str], Any]] = []

    def perform_request(self, method: str, path: str, *, headers: dict[str, str], body: Any,
                        request_timeout: float) -> tuple[Meta, Any]:
        self.sent.append((method, path, headers, body))
        status, answer = self.answers.pop(0)
        return Meta(status), answer


def cluster(*answers: tuple[int, Any]) -> tuple[Cluster, FakeTransport]:
    es = Cluster("http://127.0.0.1:9", "serverless")
    fake = FakeTransport(*answers)
    es._transport = fake  # type: ignore[assignment]
    return es, fake


def test_bulk_and_search_are_the_clients_requests() -> None:
    es, fake = cluster((200, {"items": []}), (200, {"hits": {}}))
    es.bulk(operations=[{"index": {"_index": "i", "_id": "1"}}, {"a": 1}])
    es.search(index="i", size=0, query={"match_all": {}})
    (m1, p1, h1, _), (m2, p2, h2, b2) = fake.sent
    assert (m1, p1, h1["content-type"]) == ("PUT", "/_bulk", "application/x-ndjson")
    assert (m2, p2, b2) == ("POST", "/i/_search", {"size": 0, "query": {"match_all": {}}})
    assert h2["elastic-api-version"] == SERVERLESS_API_VERSION


def test_an_index_that_exists_is_left_alone() -> None:
    search.forget_index_setup()
    es, fake = cluster((200, {}), (404, None),
                       (400, {"error": {"type": "resource_already_exists_exception"}}))
    search.ensure_index(es)  # created meanwhile by another process: fine
    assert [(m, p) for m, p, _, _ in fake.sent] == [
        ("PUT", "/_index_template/marketplace-events"), ("HEAD", "/marketplace-events"),
        ("PUT", "/marketplace-events")]
    search.forget_index_setup()


def test_other_errors_raise_with_their_type() -> None:
    es, _ = cluster((503, {"error": {"type": "unavailable_shards_exception"}}))
    with pytest.raises(ClusterError, match="503 unavailable_shards_exception"):
        es.search(index="i")

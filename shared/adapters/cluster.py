"""The functions' few Elasticsearch calls, made on `elastic_transport` without the client.

`index_event` and `analytics` put the index template, create the index, bulk
index and search: five requests. The `elasticsearch` package sends them
through this same transport (`elastic_transport`, its connection pool, its
retries on 429/502/503/504 and on connection errors), but importing it also
builds its whole API, sync and async, into every cold start.
`Cluster` sends the same requests with the same headers (`elastic-api-version`
in serverless mode) and has the client's method names, so `search.ensure_index`
and `analytics.summary` take either. Not carried over: the client's check that
the server calls itself Elasticsearch (the embedded server does not).
"""

from __future__ import annotations

from typing import Any

SERVERLESS_API_VERSION = "2023-10-31"  # what elasticsearch-py 9 sends in serverless mode


class ClusterError(RuntimeError):
    """The cluster answered with an error status (the message carries its error type)."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", body) if isinstance(body, dict) else body
        kind = error.get("type", error) if isinstance(error, dict) else error
        super().__init__(f"{status} {kind}")
        self.status = status
        self.body = body


class _Indices:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def put_index_template(self, *, name: str, index_patterns: list[str],
                           template: dict[str, Any], priority: int) -> Any:
        return self._cluster.request("PUT", f"/_index_template/{name}", {
            "index_patterns": index_patterns, "template": template, "priority": priority})

    def exists(self, *, index: str) -> bool:
        return bool(self._cluster.request("HEAD", f"/{index}") is not None)

    def create(self, *, index: str) -> Any:
        return self._cluster.request("PUT", f"/{index}")


class Cluster:
    """A thread-safe handle on the cluster at `url` (the transport pools its connections)."""

    def __init__(self, url: str, mode: str = "stack", request_timeout: float = 10.0) -> None:
        from elastic_transport import Transport
        from elastic_transport.client_utils import url_to_node_config

        self._transport = Transport([url_to_node_config(url, use_default_ports_for_scheme=True)])
        self._headers = {"accept": "application/json"}
        if mode == "serverless":
            self._headers["elastic-api-version"] = SERVERLESS_API_VERSION
        self._timeout = request_timeout
        self.indices = _Indices(self)

    def request(self, method: str, path: str, body: Any = None, ndjson: bool = False) -> Any:
        """The answer's body; None for a HEAD that found nothing; ClusterError for an error."""
        headers = dict(self._headers)
        if body is not None:
            headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
        meta, answer = self._transport.perform_request(method, path, headers=headers, body=body,
                                                        request_timeout=self._timeout)
        if method == "HEAD":
            if meta.status == 404:
                return None
            answer = {}
        if not 200 <= meta.status < 300:
            raise ClusterError(meta.status, answer)
        return answer

    def bulk(self, *, operations: list[dict[str, Any]]) -> Any:
        return self.request("PUT", "/_bulk", operations, ndjson=True)

    def search(self, *, index: str, **body: Any) -> Any:
        return self.request("POST", f"/{index}/_search", body)

    def close(self) -> None:
        self._transport.close()

"""The HTTP function behind /admin/dead-letters: list what failed, redrive it once it is fixed.

The records come from `record_dead_letter` (the dead-letter topic, kept in
PostgreSQL). A redrive POSTs each chosen record's original CloudEvent to the
function it failed in, at the address the routing declaration gives that
function (`shared.domain.dead_letters.destination`), never at the one the
record carries: anyone who can write to the topic writes that, so it is only
shown (`recorded_destination`). A record naming no function of ours is not
delivered and says why. Deliveries happen outside any transaction (one may
take up to the KafkaSource's 30 s); then the outcome is recorded on the record
and who asked in `redrives`. Repeating one is harmless: the function's inbox
drops what it handled.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StringConstraints,
    model_validator,
)

from shared.domain import dead_letters as letters
from shared.edge.api import (
    Api,
    Caller,
    Omittable,
    Page,
    PageQuery,
    equal_to,
    page_of,
    select_page,
)
from shared.edge.roles import ADMINS
from shared.runtime.db import Row, Tx
from shared.runtime.routing import Reaction, load
from shared.runtime.unit_of_work import unit_of_work

api = Api()
SOURCE = "/marketplace/functions/dead-letters"
REDRIVE_BATCH = 100  # deliveries are one at a time: a bigger backlog takes several calls

FunctionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=200)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
EventIds = Annotated[list[EventId], Field(min_length=1, max_length=REDRIVE_BATCH)]
Status = Literal["DEAD", "REDRIVEN"]


class DeadLetterQuery(PageQuery):
    function: FunctionName | None = Field(None, description="the function it failed in")
    type: EventType | None = Field(None, description="the CloudEvent type")
    status: Status | None = Field(None, description="DEAD: waiting for a redrive")


class DeadLetter(BaseModel):
    dead_letter_id: uuid.UUID
    event_id: str
    type: str
    subject: str | None
    topic: str | None = Field(description="the original topic (from the type; null if not ours)")
    function: str = Field(description="the function it failed in")
    recorded_destination: str = Field(description=(
        "where the record says it was delivered (knativeerrordest): shown, never used; a"
        " redrive goes to the function's address in the routing declaration"))
    code: int = Field(description="the function's HTTP answer (0: no answer)")
    reason: str
    status: Status
    failures: int
    first_failed_at: datetime
    last_failed_at: datetime
    redrives: int
    last_redriven_at: datetime | None
    last_redriven_by: uuid.UUID | None


# `ids`, `function` or `type`, or `all: true` (not both): said in the schema as validated.
_NARROWED: list[JsonValue] = [{"required": [name]} for name in ("ids", "function", "type")]


class RedriveFilter(BaseModel):
    """Which dead letters to re-deliver: every filter given must match, or `all`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["all"], "properties": {"all": {"const": True}},
         "not": {"anyOf": _NARROWED}},
        {"properties": {"all": {"const": False}}, "anyOf": _NARROWED}]})
    ids: Omittable[EventIds] = Field(None, description=(
        "CloudEvent ids; these are redriven even if they were before"))
    function: Omittable[FunctionName] = None
    type: Omittable[EventType] = None
    all: StrictBool = Field(False, description="every dead letter still waiting")

    @model_validator(mode="after")
    def one_way_to_choose(self) -> RedriveFilter:
        narrowed = self.ids is not None or self.function is not None or self.type is not None
        if self.all == narrowed:
            raise ValueError("give ids, function or type, or all: true (not both)")
        return self


class Redelivery(BaseModel):
    dead_letter_id: uuid.UUID
    event_id: str
    function: str
    code: int = Field(description="the function's HTTP answer (0: none, or not sent)")
    delivered: bool
    reason: str | None = Field(description="why not delivered (null when it was)")


class RedriveResult(BaseModel):
    redrive_id: uuid.UUID
    matched: int = Field(description="dead letters chosen by the filter")
    delivered: int = Field(description="accepted by their function (2xx)")
    failed: int
    remaining: int = Field(description="more that match, for the next call")
    items: list[Redelivery]


def dead_letter_view(row: Row) -> dict[str, Any]:
    return DeadLetter.model_validate(
        {**row, "type": row["event_type"], "code": row["error_code"],
         "recorded_destination": row["destination"]}).model_dump(mode="json")


@api.route("GET", "/admin/dead-letters", roles=ADMINS)
def list_dead_letters(query: DeadLetterQuery) -> Page:
    """The dead letters, last failed first: where each failed, why, and what was done about it."""
    where: list[str] = []
    params: dict[str, Any] = {}
    equal_to(where, params, function=query.function, event_type=query.type,
             status=query.status)
    with unit_of_work(SOURCE) as uow:
        rows, total = select_page(uow.tx, "dead_letters", where, params,
                                  "last_failed_at DESC, dead_letter_id", query)
    return page_of([dead_letter_view(r) for r in rows], query, total)


def _chosen(chosen: RedriveFilter) -> tuple[list[str], dict[str, Any]]:
    where, params = [], dict[str, Any]()
    if chosen.ids is not None:
        where.append("event_id = ANY(CAST(:ids AS text[]))")
        params["ids"] = chosen.ids
    else:
        where.append("status = 'DEAD'")
    equal_to(where, params, function=chosen.function, event_type=chosen.type)
    return where, params


def _deliver(row: Row, reactions: list[Reaction], template: str | None) -> letters.Delivery:
    """To the declared address of the function the record names, or nowhere (and why)."""
    try:
        url = letters.destination(str(row["function"]), str(row["event_type"]), reactions,
                                  template)
    except letters.NotRoutable as refused:
        return letters.Delivery(0, str(refused))
    return letters.redeliver(row, url)


@api.route("POST", "/admin/dead-letters/redrive", roles=ADMINS, status=202)
def redrive(chosen: RedriveFilter, caller: Caller) -> RedriveResult:
    """Re-deliver the chosen dead letters, each to the function it failed in."""
    where, params = _chosen(chosen)
    with unit_of_work(SOURCE) as uow:
        rows = uow.tx.all(
            f"SELECT *, count(*) OVER () AS matching FROM dead_letters WHERE {' AND '.join(where)}"
            " ORDER BY first_failed_at, dead_letter_id LIMIT :n", n=REDRIVE_BATCH, **params)
    reactions, _ = load()
    template = letters.address_template(os.environ)
    outcomes = [(row, _deliver(row, reactions, template)) for row in rows]
    redrive_id = uuid.uuid4()
    with unit_of_work(SOURCE) as uow:
        for row, delivery in outcomes:
            _record_outcome(uow.tx, row, delivery, caller.user_id)
        delivered = sum(1 for _, d in outcomes if d.accepted)
        uow.tx.execute(
            "INSERT INTO redrives (redrive_id, requested_by, filter, dead_letter_ids, delivered,"
            " failed) VALUES (:r, :u, CAST(:f AS jsonb), CAST(:ids AS uuid[]), :d, :x)",
            r=redrive_id, u=caller.user_id,
            f=json.dumps(chosen.model_dump(exclude_defaults=True)),
            ids=[str(row["dead_letter_id"]) for row, _ in outcomes], d=delivered,
            x=len(outcomes) - delivered)
    matching = int(rows[0]["matching"]) if rows else 0
    return RedriveResult(
        redrive_id=redrive_id, matched=len(outcomes), delivered=delivered,
        failed=len(outcomes) - delivered, remaining=matching - len(outcomes),
        items=[Redelivery(dead_letter_id=row["dead_letter_id"], event_id=row["event_id"],
                          function=row["function"], code=d.code, delivered=d.accepted,
                          reason=None if d.accepted else d.answer or "(no answer body)")
               for row, d in outcomes])


def _record_outcome(tx: Tx, row: Row, delivery: letters.Delivery, by: uuid.UUID) -> None:
    """Accepted: REDRIVEN. Refused again: still DEAD, with this answer as its reason."""
    if delivery.accepted:
        tx.execute(
            "UPDATE dead_letters SET status = 'REDRIVEN', redrives = redrives + 1,"
            " last_redriven_at = now(), last_redriven_by = :u WHERE dead_letter_id = :id",
            u=by, id=row["dead_letter_id"])
        return
    tx.execute(
        "UPDATE dead_letters SET status = 'DEAD', redrives = redrives + 1,"
        " last_redriven_at = now(), last_redriven_by = :u, failures = failures + 1,"
        " last_failed_at = now(), error_code = :c, reason = :r WHERE dead_letter_id = :id",
        u=by, c=delivery.code, r=delivery.answer or "(no answer body)", id=row["dead_letter_id"])


dead_letters = api.function("/admin/dead-letters")

"""A view takes what its parameters' types name, and a signature it cannot serve fails at import."""

from __future__ import annotations

import json
import uuid
from typing import Any

import flask
import pytest
from pydantic import BaseModel, ConfigDict

from shared.edge import tokens
from shared.edge.api import Api, Caller, PageQuery, Reply
from shared.edge.roles import ADMINS, SIGNED_IN, Role

api = Api()


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Noted(BaseModel):
    note_id: uuid.UUID
    text: str
    by: uuid.UUID
    page: int


@api.route("POST", "/notes/<uuid:note_id>", roles=SIGNED_IN, status=201, errors=(404,))
def add_note(note_id: uuid.UUID, query: PageQuery, body: Note, caller: Caller,
             raw: flask.Request) -> Reply[Noted]:
    """Echo what the route gave."""
    assert raw.path == f"/notes/{note_id}"
    return Noted(note_id=note_id, text=body.text, by=caller.user_id, page=query.page)


@api.route("GET", "/notes/admin", roles=ADMINS)
def for_admins() -> dict[str, Any]:
    return {"ok": True}


def ask(method: str, path: str, body: object = None, role: Role | None = None
        ) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if role is not None:
        token = tokens.issue_access(uuid.uuid4(), role, uuid.uuid4())
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body) if body is not None else None
    with flask.Flask(__name__).test_request_context(path, method=method, data=data,
                                                    headers=headers):
        response = api.dispatch(flask.request)
    return response.status_code, json.loads(response.get_data() or b"null")


def test_the_route_is_read_from_the_signature() -> None:
    route = api.routes[0]
    assert (route.body, route.query, route.response) == (Note, PageQuery, Noted)
    assert route.takes == (("note_id", "path"), ("query", "query"), ("body", "body"),
                           ("caller", "caller"), ("raw", "raw"))
    assert api.routes[1].response is None  # a dict documents no model


def test_a_view_gets_its_path_query_body_and_caller() -> None:
    note = uuid.uuid4()
    status, answer = ask("POST", f"/notes/{note}?page=3", {"text": "hi"}, Role.USER)
    assert status == 201
    assert answer["note_id"] == str(note) and answer["text"] == "hi" and answer["page"] == 3


def test_what_does_not_validate_is_refused_before_the_view() -> None:
    note = uuid.uuid4()
    assert ask("POST", f"/notes/{note}", {"text": "hi"})[0] == 401
    assert ask("GET", "/notes/admin", role=Role.AUTHOR)[0] == 403
    assert ask("GET", "/notes/admin", role=Role.ADMIN) == (200, {"ok": True})
    status, problem = ask("POST", f"/notes/{note}", {"text": 1}, Role.USER)
    assert status == 422 and problem["errors"][0]["field"] == "text"
    status, problem = ask("POST", f"/notes/{note}?page=0", {"text": "hi"}, Role.USER)
    assert status == 422 and problem["errors"][0]["field"] == "page"


def test_a_signature_the_route_cannot_serve_fails_when_declared() -> None:
    other = Api()
    with pytest.raises(TypeError, match="roles"):
        other.route("GET", "/mine")(_anonymous_caller)
    with pytest.raises(TypeError, match="annotation"):
        other.route("GET", "/x/<name>")(_unannotated)
    with pytest.raises(TypeError, match="path parameters by name"):
        other.route("GET", "/x")(_unknown_parameter)


def _anonymous_caller(caller: Caller) -> None: ...


def _unannotated(name) -> None: ...  # type: ignore[no-untyped-def]


def _unknown_parameter(name: str) -> None: ...

"""The HTTP function behind /users/me/notifications: what we sent you, newest first.

Its own function (the front door routes the longest prefix first), so the
profile function behind /users need not know about notifications.
"""

from __future__ import annotations

from typing import Any

from shared.edge.api import Api, Caller, Page, PageQuery, page_of, select_page
from shared.edge.roles import SIGNED_IN
from shared.runtime.db import Row
from shared.runtime.unit_of_work import unit_of_work

api = Api()
SOURCE = "/marketplace/functions/my-notifications"


def notification_view(row: Row) -> dict[str, Any]:
    return {
        "notification_id": str(row["notification_id"]),
        "channel": row["channel"],
        "template": row["template"],
        "recipient": row["recipient"],
        "subject": row["subject"],
        "status": row["status"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "provider_message_id": row["provider_message_id"],
        "error": row["error"],
        "attempts": row["attempts"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


@api.route("GET", "/users/me/notifications", roles=SIGNED_IN)
def list_mine(query: PageQuery, caller: Caller) -> Page:
    """The notifications sent (or tried) to the caller, newest first."""
    with unit_of_work(SOURCE) as uow:
        rows, total = select_page(uow.tx, "notifications", ["user_id = :u"],
                                  {"u": caller.user_id},
                                  "created_at DESC, notification_id", query)
    return page_of([notification_view(r) for r in rows], query, total)


my_notifications = api.function("/users/me/notifications")

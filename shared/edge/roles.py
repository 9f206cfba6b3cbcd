"""The roles a caller can have, and the sets of them that routes admit, named once.

A role travels in the access token (`shared.edge.tokens`) and is stored on the
account (the migrations' CHECK lists the same three names); a route says
which of these sets may call it (`shared.edge.api`).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a signed-in caller may do: a user books, an author also sells, an admin runs it."""

    USER = "user"
    AUTHOR = "author"
    ADMIN = "admin"


SIGNED_IN: frozenset[Role] = frozenset(Role)
AUTHORS: frozenset[Role] = frozenset({Role.AUTHOR, Role.ADMIN})
ADMINS: frozenset[Role] = frozenset({Role.ADMIN})

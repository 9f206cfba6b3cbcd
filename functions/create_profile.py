"""A user registered: their profile is created from what they registered with."""

from __future__ import annotations

from shared.domain.events import UserRegistered
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(UserRegistered)
def create_profile(event: UserRegistered, uow: UnitOfWork) -> Emitted:
    uow.tx.execute(
        "INSERT INTO profiles (user_id, email, full_name, phone, role, registered_at)"
        " VALUES (:u, :e, :n, :p, :r, :at) ON CONFLICT (user_id) DO NOTHING",
        u=event.user_id, e=event.email, n=event.full_name, p=event.phone, r=event.role,
        at=event.registered_at,
    )
    return None

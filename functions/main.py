"""The functions-framework source for every function: pick one with FUNCTION_TARGET.

One image serves them all (`--source functions/main.py --target reserve_ticket`);
importing this module also fills the routing declaration in `shared.routing`.
"""

from __future__ import annotations

import os
import sys

# functions-framework loads this file by path; make the project importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.config import settings

# functions-framework names the target before it loads this file: when serving,
# refuse to start with unsafe settings (no JWT_SECRET outside local mode).
if os.environ.get("FUNCTION_TARGET"):
    settings()

from functions.accounts import accounts
from functions.analytics import analytics
from functions.api_docs import api_docs
from functions.bookings import bookings
from functions.cancel_open_payment import cancel_open_payment
from functions.catalogue import catalogue
from functions.create_profile import create_profile
from functions.expire_booking import expire_booking
from functions.health import health
from functions.index_analytics import index_event
from functions.my_notifications import my_notifications
from functions.notify import send_notifications
from functions.open_hold import open_hold
from functions.open_payment import open_payment
from functions.reject_booking import reject_booking
from functions.relay_outbox import relay_outbox
from functions.reserve_ticket import reserve_ticket
from functions.settle_booking import settle_booking
from functions.settle_ticket import settle_ticket
from functions.sweep_expired_holds import sweep_expired_holds
from functions.users import users

__all__ = [
    "accounts",
    "analytics",
    "api_docs",
    "bookings",
    "cancel_open_payment",
    "catalogue",
    "create_profile",
    "expire_booking",
    "health",
    "index_event",
    "my_notifications",
    "open_hold",
    "open_payment",
    "reject_booking",
    "relay_outbox",
    "reserve_ticket",
    "send_notifications",
    "settle_booking",
    "settle_ticket",
    "sweep_expired_holds",
    "users",
]

"""The functions-framework source for every function: pick one with FUNCTION_TARGET.

One image serves them all (`--source functions/main.py --target reserve_ticket`);
importing this module also fills the routing declaration in `shared.routing`.
"""

from __future__ import annotations

import os
import sys

# functions-framework loads this file by path; make the project importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from functions.accounts import accounts  # noqa: E402
from functions.bookings import bookings  # noqa: E402
from functions.cancel_open_payment import cancel_open_payment  # noqa: E402
from functions.catalogue import catalogue  # noqa: E402
from functions.expire_booking import expire_booking  # noqa: E402
from functions.health import health  # noqa: E402
from functions.open_hold import open_hold  # noqa: E402
from functions.open_payment import open_payment  # noqa: E402
from functions.reject_booking import reject_booking  # noqa: E402
from functions.relay_outbox import relay_outbox  # noqa: E402
from functions.reserve_ticket import reserve_ticket  # noqa: E402
from functions.settle_booking import settle_booking  # noqa: E402
from functions.settle_ticket import settle_ticket  # noqa: E402
from functions.sweep_expired_holds import sweep_expired_holds  # noqa: E402

__all__ = [
    "accounts",
    "bookings",
    "cancel_open_payment",
    "catalogue",
    "expire_booking",
    "health",
    "open_hold",
    "open_payment",
    "reject_booking",
    "relay_outbox",
    "reserve_ticket",
    "settle_booking",
    "settle_ticket",
    "sweep_expired_holds",
]

"""The doorbell carries topic names from any process's producer to the emulator's consumers."""

from __future__ import annotations

import threading

from local.knative.doorbell import ANY, DoorbellListener
from shared.runtime.kafka import Doorbell


def test_a_ring_reaches_the_subscribers_of_its_topics_and_of_any() -> None:
    listener = DoorbellListener()
    booked, paid, anything = threading.Event(), threading.Event(), threading.Event()
    listener.subscribe(["booking.requested"], booked.set)
    listener.subscribe(["payment.succeeded"], paid.set)
    listener.subscribe([ANY], anything.set)
    bell = Doorbell(listener.address)
    try:
        bell.ring(["booking.requested", "ticket.reserved"])
        assert booked.wait(2) and anything.wait(2)
        assert not paid.is_set()
    finally:
        bell.close()
        listener.close()
    assert not any(t.name == "doorbell" and t.is_alive() for t in threading.enumerate())


def test_a_bell_without_an_address_or_a_listener_costs_nothing_and_raises_nothing() -> None:
    Doorbell(None).ring(["booking.requested"])  # the cluster: no address
    assert not Doorbell(None)
    listener = DoorbellListener()
    address = listener.address
    listener.close()
    Doorbell(address).ring(["booking.requested"])  # the emulator restarting: lost, harmless

"""The embedded payment provider: the `localstripe` fake Stripe server, run the way we need it.

localstripe (GPL-3.0, a test tool: it is in the `local` extra only, never in
the image) is stateful: intents, charges, refunds and events live in memory
and it signs and sends webhooks. Its own entry point is not what a local stack
wants, so this launcher runs its aiohttp app itself:

* on 127.0.0.1 only (its entry point binds every interface);
* without its pickle file (it rewrites `/tmp/localstripe.pickle` on every
  write, which slows every call as the store grows and leaks state between runs);
* with `pm_card_chargeDeclined` declined when charged, as on Stripe (it does
  not know that token, and its `pm_card_visa_chargeDeclined` succeeds);
* with the stack's webhook registered at start, so a restarted fake (its store
  is memory only) sends webhooks again without anybody registering it;
* with webhooks sent after `--webhook-delay` seconds instead of its fixed second;
* with `confirm` taking a `payment_method`, as Stripe's does (its own answers 500);
* with its lists read from an index by type: it scans its whole store for each,
  and a charge lists its refunds whenever it is written out, so each payment
  cost more than the last (10,000 bookings took it past half a core).

    python -m local.stack.fakestripe --port 8420 \
        --webhook-url http://127.0.0.1:8080/webhooks/stripe --webhook-secret whsec_...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import types
from typing import Any

# The events the marketplace acts on; the fake sends nothing else to it.
WEBHOOK_EVENTS = ["payment_intent.succeeded", "payment_intent.payment_failed",
                  "payment_intent.canceled"]
# Test cards, by the number the fake decides on: declined when charged.
DECLINED_ON_CHARGE = "4000000000000341"
DECLINING_TOKENS = ("pm_card_chargeDeclined", "pm_card_visa_chargeDeclined")


def _teach_declining_tokens(resources: Any) -> None:
    method = resources.PaymentMethod
    canonical = method._try_get_canonical_test_article.__func__

    def article(cls: Any, id: str) -> Any:
        if id in DECLINING_TOKENS:
            return method(type="card", card={"number": DECLINED_ON_CHARGE, "exp_month": "12",
                                             "exp_year": "2030", "cvc": "123"})
        return canonical(cls, id)

    method._try_get_canonical_test_article = classmethod(article)


def _confirm_with_method(resources: Any) -> None:
    intent = resources.PaymentIntent
    confirm = intent._api_confirm.__func__

    def confirm_with(cls: Any, /, id: str, payment_method: str | None = None, **kwargs: Any
                     ) -> Any:
        if payment_method is not None:
            resources.PaymentMethod._api_retrieve(payment_method)  # 404 for an unknown token
            found = cls._api_retrieve(id)
            if found.latest_charge is None and not found._canceled:
                found.payment_method = payment_method
        return confirm(cls, id, **kwargs)

    original = intent._api_confirm
    intent._api_confirm = classmethod(confirm_with)
    # Its routes are made from this list when its server module is imported (after this).
    resources.extra_apis[:] = [(verb, url, intent._api_confirm if func == original else func)
                               for verb, url, func in resources.extra_apis]


def _index_lists(resources: Any) -> None:
    """Keep the store's objects by type as well, and list a type from there."""
    store_type, store = resources.Store, resources.store
    by_type: dict[str, dict[str, Any]] = {}
    for key, value in store.items():
        by_type.setdefault(key.split(":", 1)[0], {})[key] = value
    store.by_type = by_type
    set_item, del_item, clear = store_type.__setitem__, store_type.__delitem__, store_type.clear

    def setitem(self: Any, key: str, value: Any) -> None:
        set_item(self, key, value)
        self.by_type.setdefault(key.split(":", 1)[0], {})[key] = value

    def delitem(self: Any, key: str) -> None:
        del_item(self, key)
        self.by_type.get(key.split(":", 1)[0], {}).pop(key, None)

    def cleared(self: Any) -> None:
        clear(self)
        self.by_type.clear()

    store_type.__setitem__, store_type.__delitem__, store_type.clear = setitem, delitem, cleared
    base = resources.StripeObject

    def list_all(cls: Any, /, url: str, limit: Any = None, starting_after: Any = None,
                 **kwargs: Any) -> Any:
        if kwargs:
            raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        found = resources.List(url, limit=limit, starting_after=starting_after)
        found._list = list(store.by_type.get(cls.object, {}).values())
        return found

    base._api_list_all = classmethod(list_all)


def _delay_webhooks(webhooks: Any, seconds: float) -> None:
    """Its sender sleeps a fixed second before each webhook; make that `seconds`."""

    async def sleep(_: float) -> None:
        await asyncio.sleep(seconds)

    webhooks.asyncio = types.SimpleNamespace(sleep=sleep, ensure_future=asyncio.ensure_future)


def prepare(webhook_url: str, webhook_secret: str, webhook_delay: float) -> Any:
    """Import and adjust localstripe; returns its aiohttp application."""
    from localstripe import resources, webhooks  # type: ignore[import-untyped]

    resources.Store.dump_to_disk = lambda self: None
    _teach_declining_tokens(resources)
    _confirm_with_method(resources)
    _index_lists(resources)
    _delay_webhooks(webhooks, webhook_delay)
    from localstripe import server  # builds its routes now, from the adjusted resources

    if webhook_url:
        webhooks.register_webhook("marketplace", webhook_url, webhook_secret, WEBHOOK_EVENTS)
    return server.app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook-url", default="")
    parser.add_argument("--webhook-secret", default="")
    parser.add_argument("--webhook-delay", type=float, default=0.1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from aiohttp import web

    app = prepare(args.webhook_url, args.webhook_secret, args.webhook_delay)
    web.run_app(app, host=args.host, port=args.port, print=None,
                access_log=logging.getLogger("aiohttp.access"))


if __name__ == "__main__":
    main()

"""`make run`: the whole marketplace on this machine until Ctrl-C.

    python -m local.run [--port 8080] [--workdir .local/run]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from local import seed
from local.embedded import EmbeddedServerError
from local.shutdown import stop_on_signals, wait_for_stop
from local.stack import Stack, StackConfig

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--workdir", type=Path, default=ROOT / ".local" / "run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its event-loop timing chatter

    os.environ.setdefault("LOG_FORMAT", "text")  # for people; LOG_FORMAT=json for machines
    shutil.rmtree(args.workdir, ignore_errors=True)  # embedded state is fresh each run
    stop_on_signals()

    print("Starting the marketplace...", flush=True)
    stack = Stack(StackConfig(workdir=args.workdir, port=args.port))
    try:
        stack.start(pending=["admin account and demo course"])
        admin_email = os.environ.get("ADMIN_EMAIL", "admin@marketplace.local")
        assert stack.runtime is not None
        admin_id, password = seed.seed_admin(stack.runtime, admin_email,
                                             os.environ.get("ADMIN_PASSWORD"))
        course = seed.seed_demo_course(stack.runtime, admin_id)
        if password:  # for scripts (the README's tour): readable by this user only
            secret = args.workdir / "admin-password"
            secret.touch(mode=0o600)
            secret.write_text(password)
        stack.mark_ready()  # /healthz answers 200 from here: the banner is true
        embedded = ", ".join(stack.embedded) or "none"
        traces = (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                  or "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them)")
        payments = stack.env.get("STRIPE_API_BASE") or "Stripe (STRIPE_API_KEY)"
        print(f"""
Marketplace is up.
  API           {stack.api_url}   (try {stack.api_url}/healthz)
  admin         {admin_email} / {password or '(ADMIN_PASSWORD, or unchanged)'}
  demo course   {stack.api_url}/courses/{course}
  embedded      {embedded}
  Kafka         {stack.env['KAFKA_BOOTSTRAP_SERVERS']}   ({stack.partitions} partitions per topic)
  PostgreSQL    {stack.env['DATABASE_URL']}
  Redis         {stack.env['REDIS_URL']}
  search        {stack.env['ELASTICSEARCH_URL']}
  AWS endpoint  {stack.env['AWS_ENDPOINT_URL']}   (sent mail: /moto-api/)
  payments      {payments}   (webhook: {stack.api_url}/webhooks/stripe)
  reactions     {stack.reactions_url}   triggers {stack.triggers_url}/healthz
  metrics       {stack.api_url}/metrics (API host)   {stack.reactions_url}/metrics (reactions)
                {stack.triggers_url}/metrics (KafkaSource emulator: lag, dead letters)
  traces        {traces}
  logs          {args.workdir}   (LOG_FORMAT={os.environ['LOG_FORMAT']})
Ctrl-C stops everything.
""", flush=True)
        wait_for_stop()
    except KeyboardInterrupt:
        pass  # stopped while starting
    except EmbeddedServerError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:
        print("Stopping...", flush=True)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # sockets closing under it
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

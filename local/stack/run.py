"""`make run`: the whole marketplace on this machine until Ctrl-C.

    python -m local.stack.run [--port 8080] [--workdir .local/run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from local import console
from local.knative.shutdown import stop_on_signals, wait_for_stop
from local.stack import seed
from local.stack.embedded import EmbeddedServerError
from local.stack.stack import Stack, StackConfig

ROOT = Path(__file__).resolve().parents[2]


@console.command("run")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--workdir", type=Path, default=ROOT / ".local" / "run")
    args = parser.parse_args(argv)
    os.environ.setdefault("LOG_FORMAT", "text")  # for people; LOG_FORMAT=json for machines
    shutil.rmtree(args.workdir, ignore_errors=True)  # embedded state is fresh each run
    log = console.log_path("run")
    stop_on_signals()

    console.say(f"Starting the marketplace (this command's log: {console.shown(log)})")
    stack = Stack(StackConfig(workdir=args.workdir, port=args.port,
                              progress=lambda step: console.say(f"  {step} ...")))
    try:
        stack.start(pending=["admin account and demo course"])
        admin_email = os.environ.get("ADMIN_EMAIL", "admin@marketplace.local")
        assert stack.runtime is not None
        admin_id, password = seed.seed_admin(stack.runtime, admin_email,
                                             os.environ.get("ADMIN_PASSWORD"))
        course = seed.seed_demo_course(stack.runtime, admin_id)
        if password:  # for scripts (the getting-started tour): readable by this user only
            secret = args.workdir / "admin-password"
            secret.touch(mode=0o600)
            secret.write_text(password)
        stack.mark_ready()  # /healthz answers 200 from here: the banner is true
        embedded = ", ".join(stack.embedded) or "none"
        traces = (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                  or "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them)")
        payments = stack.env.get("STRIPE_API_BASE") or "Stripe (STRIPE_API_KEY)"
        console.say(f"""
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
""")
        wait_for_stop()
    except KeyboardInterrupt:
        pass  # stopped while starting
    except EmbeddedServerError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:
        console.say("Stopping...")
        console.quiet("kafka")  # sockets closing under it
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

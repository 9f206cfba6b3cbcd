"""What every function carries: settings, the pool, CloudEvents, inbox/outbox, the decorators.

Nothing here imports a client library at import time; Redis and kafka-python
load on first use (`bootstrap`).
"""

"""Ports for the servers a test starts: the local stack's own picker, and a probe.

The picker is the stack's, not a copy, so the tests and the stack choose ports alike.
"""

from __future__ import annotations

import socket

from local.stack.embedded import free_port

__all__ = ["accepting", "free_port"]


def accepting(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept connections on this port yet?"""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True

"""Fault injection: the saga under load while each part of the stack fails (`make chaos`)."""

"""Operator commands: the consistency check and the dead letters, from a terminal."""

"""The embedded stack: the whole marketplace on one machine (`make run`, `make demo`)."""

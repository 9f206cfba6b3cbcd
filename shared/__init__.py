"""Marketplace's own event library and reaction runtime, shared by every function."""

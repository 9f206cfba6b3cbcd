"""Marketplace's own code shared by the functions: runtime, edge, domain, adapters, migrations."""

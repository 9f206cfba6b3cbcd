"""Local development helpers: run the real backing servers without Docker."""

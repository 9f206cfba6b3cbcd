"""What the HTTP functions carry on top of the runtime: routes, problems, tokens, OpenAPI."""

"""Use cases, the Node supervisor, configuration loading, DI container and CLI."""

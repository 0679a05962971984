"""Squid: the whitelist proxy sidecar."""

"""SSH tunnel sidecars."""

"""The node's own metrics (Prometheus) and its local /health and /metrics endpoint."""

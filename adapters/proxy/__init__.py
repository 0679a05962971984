"""The local proxy for algorithm containers."""

"""Adapters: one sub-package per technology, plus ``memory`` (in-memory test harness)."""

"""SQLite run journal package."""

"""socketio package."""

"""docker package."""

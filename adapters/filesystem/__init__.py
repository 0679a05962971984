"""filesystem package."""

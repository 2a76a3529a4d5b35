"""lecture."""

"""tsunagu.probe."""

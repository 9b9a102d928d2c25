"""tsunagu.sources."""

"""tsunagu.placement."""

"""tsunagu.sim."""

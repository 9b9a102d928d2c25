"""tsunagu.api."""

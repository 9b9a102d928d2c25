"""tsunagu.controller."""

"""Processes that act on the read side: they read projections, keep their own tables, and are run by the service."""

"""Thin routers: validate the request model, check the caller, call one command or query, return a model."""

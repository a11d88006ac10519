"""Integrations with training and data frameworks (import the submodule you need)."""

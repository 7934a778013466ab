"""The Python API: one function per CLI command, taking the same pydantic configs.

A notebook user with a ``distributed.Client`` calls these directly; the client in scope is reused.
"""

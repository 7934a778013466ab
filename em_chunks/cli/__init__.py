"""The typer command line: thin wrappers over library calls."""

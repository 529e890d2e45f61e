"""The package version, in one place: pyproject.toml reads it (dynamic version), `polydistill.__version__` and
`distill --version` show it."""

__version__ = "0.1.0"

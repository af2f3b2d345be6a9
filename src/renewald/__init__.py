"""renewald: delivers renewal jobs from the conversation tracker's artifact.db."""

# The one place the version is written: pyproject.toml reads it from here when it builds
# (`[tool.setuptools.dynamic]`), so no start-up pays for importlib.metadata to read it back.
__version__ = "0.1.0"

"""The project's test suites, one folder per top-level package."""

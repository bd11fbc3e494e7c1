"""The service process: its one settings class (``config``), the runtime that builds and
supervises the long-running parts (``runtime``), the HTTP server (``server``), metrics."""

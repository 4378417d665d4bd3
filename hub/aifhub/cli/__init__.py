"""The ``aifhub`` command line."""

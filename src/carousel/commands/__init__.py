"""Subcommands of the ``carousel`` command line, one module each (see :mod:`carousel.cli`)."""

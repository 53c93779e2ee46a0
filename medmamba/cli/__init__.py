"""The ``medmamba`` command line: one module per subcommand, dispatched by :mod:`medmamba.cli.main`."""

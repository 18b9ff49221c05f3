"""The ``flowkit`` subcommands, one module each; see :mod:`flowkit.cli.registry`.

To add ``flowkit NAME``: create ``flowkit/cli/commands/NAME.py`` defining
``COMMAND = Command(name=..., help=..., add_arguments=..., run=...)``. Nothing else changes:
the registry finds the module, the parser lists it, ``main`` dispatches to it.
"""

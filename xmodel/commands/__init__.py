"""Subcommands of the ``xmodel`` command line, one module each.

Every module here defines ``add_parser(subparsers)``, which adds its subparser and sets
``func`` (called with the parsed arguments, returns an exit code). `xmodel.cli` discovers
them, so a new command is a new module.
"""

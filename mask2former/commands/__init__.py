"""Subcommands of the ``mask2former`` command line that need more than a few lines."""

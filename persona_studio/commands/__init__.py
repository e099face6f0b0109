"""Subcommand groups of the ``persona-studio`` CLI that live outside ``cli.py``."""

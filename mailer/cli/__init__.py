"""The `mailer` command: one module per command group; each command parses its options, calls one
engine function and prints the answer. Exit codes are mapped in one place (main.exit_code_for)."""

from mailer.cli.main import main

__all__ = ["main"]

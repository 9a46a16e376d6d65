"""The ``vestwatch`` subcommands, each registered as an entry point."""

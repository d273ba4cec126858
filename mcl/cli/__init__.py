"""Command-line entry points: `mcl <subcommand>` and `mcl-barrier`."""

"""CLI subcommands, one module each; see stream_fer.cli.COMMANDS."""

"""The `agentr` subcommands other than `fit`, one module each.

Each is a typed function whose docstring is its `--help` (`agentr.cli` builds the parser from
it with jsonargparse). They parse and check what the user typed, call the library (`agentr.search`,
`agentr.evaluation`, `agentr.report`, `agentr.envs.server`, `agentr.compare`) and print; no
library module prints for a command or holds command-line code.
"""

"""The `palaver` command line: serve, chat in a terminal, run a preset over a file, describe the model."""

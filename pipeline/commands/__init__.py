"""One module per `syncstudy` sub-command: each has `add_arguments(parser)` and `run(args) -> int`."""

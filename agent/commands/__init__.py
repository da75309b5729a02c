"""The commands a person runs: one module per ``agent`` sub-command.

Each module has ``add_arguments(parser)`` and ``main(cfg, args) -> exit code``;
:mod:`agent.commands.cli` imports only the one being run. Commands build
nothing themselves: parts come from :mod:`agent.runtime`.
"""

"""The ``msakit`` command line: one module per sub-command (``commands/NAME.py``), each with

* ``NAME``: the sub-command's name;
* ``add_parser(sub)``: its parser and arguments, every string argument declared with
  :func:`msakit.commands.arguments.arg` and a role (what the value is);
* ``run(args) -> int``: the command, mapped to a function of the API, returning the exit status;

:mod:`msakit.commands.main` builds the parser from :data:`msakit.commands.main.COMMANDS` and
runs the chosen module; :mod:`msakit.commands.arguments` holds what several commands share.
"""

"""The entry point of every stage: expected errors as one line, without a traceback.

Kept apart from ``_common`` (which imports torch and the evaluation code) so that a light stage
(prepare_data, the renderers, summarize) depends on nothing it does not use.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from aaa_core.errors import AAAError

EXPECTED = (AAAError,)  # bad input (files, params) the user fixes; anything else is a bug


def run(command: click.Command) -> None:
    """Run a stage's click command: ``if __name__ == "__main__": run(main)``.

    An expected error (``EXPECTED``) ends the stage with one line ``error: <message>`` on stderr and exit
    status 1: its message already names the file or key and the fix, and a traceback would only bury it.
    AAA_DEBUG=1 shows the traceback instead. Click's own usage errors, and unexpected exceptions with
    their tracebacks, are left as they are.
    """
    try:
        command.main()
    except EXPECTED as err:
        if os.environ.get("AAA_DEBUG") == "1":
            raise
        click.echo(f"error: {' '.join(str(err).split())}", err=True)  # a quoted YAML error spans lines
        sys.exit(1)


def input_file(*decls: str, **kwargs) -> click.Option:
    """A click option naming a file that must exist (a ``Path``); ``kwargs`` as ``click.option``'s."""
    return click.option(*decls, type=click.Path(exists=True, dir_okay=False, path_type=Path), **kwargs)


def output_file(*decls: str, **kwargs) -> click.Option:
    """A required click option naming a file the stage writes (a ``Path``)."""
    return click.option(*decls, type=click.Path(dir_okay=False, path_type=Path), required=True, **kwargs)


def params_file(flag: str = "--params", dest: str = "params_path", default: str = "params.yaml") -> click.Option:
    """The params file a stage reads (params.yaml, or a pipeline's own: blackbox.yaml, comparison.yaml, ...)."""
    return input_file(flag, dest, default=default, show_default=True)

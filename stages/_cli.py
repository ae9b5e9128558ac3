"""The entry point of every stage: expected errors as one line, without a traceback.

Kept apart from ``_common`` (which imports torch and the evaluation code) so that a light stage
(prepare_data, the renderers, summarize) depends on nothing it does not use.
"""
from __future__ import annotations

import os
import sys

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

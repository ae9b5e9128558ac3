"""chain: several stage commands run one after another in one Python process, as one DVC stage.

``python -m stages.chain stages.train_classifier --arch dnn ... :: stages.train_classifier --arch fc ...``
runs each ``stages.<name>`` command as ``python -m stages.<name> ...`` would, in order, and stops at the
first that fails, with its exit status. A family of small jobs then pays Python's and torch's start-up and
DVC's per-stage cost once. Each command seeds everything it draws (``runtime.seed_everything``), so its
outputs are those of a process of its own. A command that relaunches itself under torchrun (``devices``
> 1) runs there as a child process (``distributed.relaunch``), and the chain goes on after it.
"""
from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys

import click

from aaa_core import CHAIN_ENV
from aaa_core.errors import AAAError

SEPARATOR = "::"


def split_commands(argv: list[str]) -> list[tuple[str, list[str]]]:
    """``[module, *args]`` groups between ``::``; each module must be a stage, ``stages.<name>``."""
    commands, current = [], []
    for arg in [*argv, SEPARATOR]:
        if arg != SEPARATOR:
            current.append(arg)
            continue
        if not current:
            raise click.UsageError(f"an empty command in the chain: expected 'stages.<name> ARGS' between "
                                   f"'{SEPARATOR}' separators")
        module, *args = current
        if not module.startswith("stages.") or not module.removeprefix("stages.").isidentifier() \
                or importlib.util.find_spec(module) is None:
            raise click.UsageError(f"{module!r}: expected a stage module, e.g. stages.train_ae")
        commands.append((module, args))
        current = []
    return commands


def run_one(module: str, args: list[str]) -> int:
    """Run one stage command in this process; its exit status (0: it succeeded), as ``python -m module args``
    would end: ``ctx.exit(code)`` and ``sys.exit(code)`` give ``code``, a click error its exit code, Ctrl-C
    (``click.Abort``) 1. Any other exception propagates, with its traceback."""
    command = importlib.import_module(module).main
    sys.argv = [module, *args]          # what the stage would see as `python -m module args`
    try:
        # without standalone mode click returns `ctx.exit(code)`'s code (else the callback's return value)
        code = command.main(args=args, prog_name=f"python -m {module}", standalone_mode=False)
    except AAAError as err:
        if os.environ.get("AAA_DEBUG") == "1":
            raise
        click.echo(f"error: {module}: {' '.join(str(err).split())}", err=True)
        return 1
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except click.exceptions.Exit as err:
        return err.exit_code
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    finally:
        gc.collect()
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        click.echo(__doc__)
        return 0
    try:
        commands = split_commands(argv)
    except click.UsageError as err:
        err.show()
        return err.exit_code
    os.environ[CHAIN_ENV] = "1"
    for i, (module, args) in enumerate(commands, 1):
        click.echo(f"[{i}/{len(commands)}] {module}")
        failed = f"chain: {module} ({i} of {len(commands)}) failed; the rest did not run"
        try:
            code = run_one(module, args)
        except BaseException:
            click.echo(failed, err=True)
            raise
        if code:
            click.echo(failed, err=True)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``hsimap`` command group: errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import NoReturn

import click

from hsimap._version import version_report
from hsimap.cli.options import quiet_opt, silence
from hsimap.errors import HsimapError, is_out_of_memory, says_out_of_memory, storage_problem

OUT_OF_MEMORY = ("out of memory; no partial output was kept (use fewer --workers, a smaller "
                 "--window or --batch)")


def _exit_out_of_memory(message: str) -> NoReturn:
    """Say ``message`` and end the process at once. The outputs are already cleaned up; the
    interpreter's own teardown (GDAL closing its datasets, dask its pools) would allocate
    again and could end in GDAL's "FATAL: CPLMalloc(): Out of memory" and SIGABRT."""
    click.echo(f"Error: {message}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class HsimapGroup(click.Group):
    """Turns library errors into click's one-line errors; ``--debug`` shows tracebacks."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HsimapError as exc:
            if ctx.meta.get("hsimap.debug"):
                raise
            if says_out_of_memory(str(exc)):
                _exit_out_of_memory(str(exc))
            err = click.ClickException(str(exc))
            err.exit_code = exc.exit_code
            raise err from None
        except click.UsageError as exc:
            # Without its context click prints the "Error:" line alone: the usage block and
            # the --help hint would make every bad value three lines (exit code stays 2).
            exc.ctx = None
            raise
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted; no partial output was kept.", err=True)
            sys.exit(130)
        except MemoryError:
            if ctx.meta.get("hsimap.debug"):
                raise
            _exit_out_of_memory(OUT_OF_MEMORY)
        except Exception as exc:  # a bug or an environment problem: still one line
            if ctx.meta.get("hsimap.debug"):
                raise
            if is_out_of_memory(exc):  # torch's allocator, a thread that could not start
                _exit_out_of_memory(OUT_OF_MEMORY)
            storage = storage_problem(exc)
            if storage:
                raise click.ClickException(f"{storage}; this run's outputs were not "
                                           "written") from None
            name = type(exc).__name__
            raise click.ClickException(f"{name}: {exc} (run with --debug for details)") from None


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_report())
        ctx.exit()


def _one_line(message, category, filename, lineno, file=None, line=None) -> str:
    """Warnings as one line in hsimap's voice, without the source path and code line."""
    return f"Warning: {message}\n"


@click.group(cls=HsimapGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version,
              help="Show the versions of hsimap, Python, torch, numba, GDAL and rasterio (for "
                   "bug reports), then exit.")
@quiet_opt
@click.option("-v", "--verbose", count=True,
              help="Show GDAL's and the libraries' messages (-vv: also their debug messages).")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int, debug: bool) -> None:
    """Classify and unmix hyperspectral scenes: GIS-ready maps in the scene's coordinates."""
    ctx.meta["hsimap.debug"] = debug
    ctx.meta["hsimap.quiet"] = quiet
    from hsimap import IGNORED_ENVIRONMENT

    for item in IGNORED_ENVIRONMENT if not quiet else ():
        click.echo(f"Warning: {item} is not a thread count, ignored (--threads sets them)",
                   err=True)
    if verbose < 2:
        warnings.formatwarning = _one_line
    if verbose:
        logging.basicConfig(level=logging.INFO if verbose == 1 else logging.DEBUG,
                            format="%(levelname)s %(name)s: %(message)s")
    elif quiet:
        silence()


def _register() -> None:
    from hsimap.cli import (
        batch,
        demo,
        evaluate,
        info,
        predict,
        sample,
        suggest,
        synth,
        train,
        unmix,
        vectorize,
    )

    for module in (info, synth, train, evaluate, predict, batch, unmix, vectorize, sample,
                   suggest, demo):
        cli.add_command(module.command)


class _ClosedPipeTolerant:
    """Standard output (or error) that outlives its reader: once the reader is gone (``hsimap ... |
    head -1``), what is still printed is dropped, and the command finishes its work and
    exits as it would have. Without this, the first write after the pipe closed raised
    BrokenPipeError in the middle of the work (a batch left scenes written but unrecorded),
    and a progress bar could hang on its lock."""

    def __init__(self, stream):
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._closed = True
        # The interpreter flushes stdout at exit: point the descriptor at /dev/null, so that
        # the bytes still buffered there go nowhere instead of raising again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main() -> None:
    _register()
    if sys.stdout is not None:
        sys.stdout = _ClosedPipeTolerant(sys.stdout)
    if sys.stderr is not None:   # progress bars and messages, also piped (2>&1 | head)
        sys.stderr = _ClosedPipeTolerant(sys.stderr)
    cli()

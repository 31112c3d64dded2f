"""The ``aetheris`` command line.  One module per command; each imports its heavy deps lazily.

Errors the package raises on purpose (`AetherisError`) become one readable line on
stderr and the error's exit code; usage errors exit 2.  ``AETHERIS_DEBUG=1``
shows tracebacks of unexpected errors.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from aetheris_ray.errors import AetherisError

app = typer.Typer(
    name="aetheris",
    help="Aetheris-Ray: calibrated probabilistic forecasts of crypto prices (forecast cones, "
    "threshold probabilities, regimes), in-process or on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

from aetheris_ray.cli import backtest, forecast, ingest, models, pool, score, serve, tune  # noqa: E402,F401  (registers commands)


_shown: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one readable line on stderr (no source line, no file path), each text once."""
    text = str(message)
    if text not in _shown:
        _shown.add(text)
        print(f"warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    import warnings

    warnings.showwarning = _show_warning
    try:
        app(args=argv, standalone_mode=False)
        return 0
    except AetherisError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (click.exceptions.Exit, typer.Exit) as e:
        return e.exit_code
    except (click.ClickException, typer.TyperException) as e:  # typer >= 0.2x raises its own copy of click's
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback by default
        if os.environ.get("AETHERIS_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {e} (set AETHERIS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 70


def run() -> None:
    sys.exit(main())

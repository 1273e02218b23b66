"""The command line: the only module that reads argv and the environment, prints, and exits.

Exit codes: 0 all jobs succeeded; 1 finished with failed jobs; 2 invalid input (nothing enqueued);
3 API unreachable or key refused; 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console

from batchgen import errors

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_INVALID = 2
EXIT_API = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="batchgen",
    help="Run large, resumable, budgeted batches of generations against Oxen.ai's async media API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)
_verbose = False


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks of internal errors.")] = False,
) -> None:
    global _verbose
    _verbose = verbose


def exit_code_for(error: errors.BatchgenError) -> int:
    """The documented exit code for a user-facing error."""
    if isinstance(error, errors.AuthError | errors.ApiUnreachableError):
        return EXIT_API
    if isinstance(error, errors.ApiError):
        return EXIT_API
    return EXIT_INVALID


def _die(error: errors.BatchgenError) -> NoReturn:
    if isinstance(error, errors.ManifestError):
        for problem in error.problems:
            stderr.print(f"[red]error:[/red] {problem}", markup=True, highlight=False)
        stderr.print(f"{len(error.problems)} problem(s); nothing was enqueued.")
    else:
        stderr.print(f"[red]error:[/red] {error}")
    raise SystemExit(exit_code_for(error))


# ---- commands are registered by the modules below; each lives in its own section ----


# ---- emulator command ----


@app.command("emulator")
def emulator_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    key: Annotated[str, typer.Option(help="The API key the emulator accepts.")] = "emulator-key",
    credits_usd: Annotated[
        float, typer.Option("--credits", help="Starting balance of the key's account (USD).")
    ] = 1000.0,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Multiplier on documented model run times (1 = real time).")
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed of every random choice and fault decision.")] = 0,
    duration_s: Annotated[
        float | None, typer.Option("--duration-s", help="Fixed run time of every generation (0 = instant).")
    ] = None,
    queue_delay_s: Annotated[
        float | None, typer.Option("--queue-delay-s", help="Fixed time from enqueue to processing.")
    ] = None,
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="A fault knob, NAME=VALUE (repeatable), e.g. sse_drop_rate=0.2.")
    ] = None,
    faults_preset: Annotated[str | None, typer.Option("--faults", help="A fault preset: chaos.")] = None,
) -> None:
    """Run the built-in emulator of Oxen's API on loopback, for tests, demos and benchmarks."""
    from batchgen.emulator import Account, EmulatorConfig, Faults, serve
    from batchgen.emulator.faults import parse_assignment

    if faults_preset not in (None, "chaos"):
        raise typer.BadParameter(f"unknown preset {faults_preset!r}; the only preset is 'chaos'", param_hint="--faults")
    chosen = Faults.chaos(seed) if faults_preset == "chaos" else Faults()
    try:
        chosen = chosen.with_overrides(dict(parse_assignment(text) for text in fault or []))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--fault") from None
    config = EmulatorConfig(
        keys={key: Account(username="emulator", credits_usd=credits_usd)},
        seed=seed,
        time_scale=time_scale,
        duration_s=duration_s,
        queue_delay_s=queue_delay_s,
        faults=chosen,
    )
    stderr.print(f"emulator: http://{host}:{port}  key: {key}  time scale: {time_scale}  seed: {seed}")
    serve(config, host, port)


def main() -> None:
    """Console-script entry point."""
    try:
        result = app(standalone_mode=False)
    except errors.BatchgenError as error:
        _die(error)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.exceptions.Abort:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.ClickException as error:
        error.show()
        raise SystemExit(EXIT_INVALID) from None
    except click.exceptions.Exit as error:
        raise SystemExit(error.exit_code) from None
    except Exception:
        if _verbose:
            raise
        import traceback

        stderr.print("[red]internal error[/red] (a bug in batchgen; run with -v for the traceback):")
        stderr.print(traceback.format_exc().strip().splitlines()[-1])
        raise SystemExit(70) from None
    raise SystemExit(result if isinstance(result, int) else EXIT_OK)


if __name__ == "__main__":
    main()

"""`batchgen emulator`: the built-in stand-in for Oxen's API, served on loopback for tests, demos and benchmarks."""

from __future__ import annotations

from typing import Annotated

import typer

from batchgen import errors
from batchgen.cli.app import app, stderr


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
    # imported here: the emulator's server stack is needed by this command only
    from batchgen.emulator import Account, EmulatorConfig, Faults, serve
    from batchgen.emulator.faults import parse_assignment

    if faults_preset not in (None, "chaos"):
        raise errors.BatchgenError(f"--faults: unknown preset {faults_preset!r}; the only preset is 'chaos'")
    chosen = Faults.chaos(seed) if faults_preset == "chaos" else Faults()
    try:
        chosen = chosen.with_overrides(dict(parse_assignment(text) for text in fault or []))
    except ValueError as error:
        raise errors.BatchgenError(f"--fault: {error}") from None
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

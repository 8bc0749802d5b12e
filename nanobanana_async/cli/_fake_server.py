"""``nanobanana fake-server``: the fake provider on loopback, for curl, apps and other languages.

It prints the base URL and the key to use, and serves until Ctrl-C (or SIGTERM), which stops
it cleanly: every connection closed, no traceback, exit code 0.
"""

# No `from __future__ import annotations`: typer reads the command's annotations at run time.

import signal
import sys
from typing import Annotated

import anyio
import typer

from .. import TIERS
from ..testing import FakeNanoBanana, Faults
from ._exit import CliError
from ._ui import Ui, execute

__all__ = ["FAKE_KEY", "add_fake_server", "build_fake", "serve_fake"]

FAKE_KEY = "sk-fake"


def build_fake(
    *, tier: str, time_scale: float, fault_rate: float, fail_rate: float
) -> FakeNanoBanana:
    """The fake the options ask for; raises `CliError` (exit 2) for an impossible option."""
    if tier not in (*TIERS, "none"):
        raise CliError(f"--tier: unknown tier {tier!r}; expected one of {', '.join(TIERS)}, none")
    for option, value in (("--fault-rate", fault_rate), ("--fail-rate", fail_rate)):
        if not 0 <= value <= 1:
            raise CliError(f"{option}: must be between 0 and 1, got {value:g}")
    if not time_scale > 0:
        raise CliError(f"--time-scale: must be more than 0, got {time_scale:g}")
    faults = Faults(create={"500": fault_rate}, query={"500": fault_rate}) if fault_rate else None
    return FakeNanoBanana(
        api_key=FAKE_KEY,
        tier=None if tier == "none" else tier,
        time_scale=time_scale,
        fail_rate=fail_rate,
        faults=faults,
    )


def _announce(ui: Ui, fake: FakeNanoBanana, base_url: str) -> None:
    ui.result(f"NANOBANANA_BASE_URL={base_url}")
    ui.result(f"NANOBANANA_API_KEY={fake.api_key}")
    sys.stdout.flush()
    ui.info(
        f"Fake Nano Banana provider on {base_url} (tier {fake.tier or 'none'}, "
        f"time scale {fake.time_scale:g}). Try:\n"
        f"  curl -X POST {base_url}/api/v1/jobs/createTask "
        f"-H 'Authorization: Bearer {fake.api_key}' -H 'Content-Type: application/json' "
        """-d '{"model": "nano-banana-text-to-image", "input": {"prompt": "a banana"}}'\n"""
        "Stop it with Ctrl-C."
    )


async def serve_fake(ui: Ui, fake: FakeNanoBanana, *, host: str, port: int) -> int:
    """Serve ``fake`` until Ctrl-C or SIGTERM; prints how to reach it first."""
    if sys.platform == "win32":  # no signal receivers there: Ctrl-C only
        async with fake.serve(host, port) as base_url:
            _announce(ui, fake, base_url)
            await anyio.sleep_forever()
    # SIGTERM is caught before the URL is printed, so whoever read the URL can stop it cleanly.
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with fake.serve(host, port) as base_url:
            _announce(ui, fake, base_url)
            async for _ in signals:
                break
    ui.info("fake provider stopped")
    return 0


def add_fake_server(app: typer.Typer) -> None:
    """Register the ``fake-server`` command."""

    @app.command("fake-server")
    def fake_server(
        port: Annotated[int, typer.Option(help="The port; 0 picks a free one.")] = 8000,
        host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
        tier: Annotated[
            str, typer.Option(help=f"The tier whose limits it enforces: {', '.join(TIERS)}, none.")
        ] = "basic",
        time_scale: Annotated[
            float, typer.Option(help="Real seconds per provider second: 0.1 is 10x faster.")
        ] = 1.0,
        fault_rate: Annotated[
            float, typer.Option(help="The chance that an API call answers a 500 (0 to 1).")
        ] = 0.0,
        fail_rate: Annotated[
            float, typer.Option(help="The chance that a task ends in failure (0 to 1).")
        ] = 0.0,
    ) -> None:
        """Serve the fake provider on this machine, for curl, your app or another language."""
        ui = Ui(verbose=False)
        try:
            fake = build_fake(
                tier=tier, time_scale=time_scale, fault_rate=fault_rate, fail_rate=fail_rate
            )
        except CliError as exc:
            ui.error(str(exc))
            raise typer.Exit(exc.exit_code) from None

        async def work() -> int:
            return await serve_fake(ui, fake, host=host, port=port)

        def stopped() -> None:
            ui.info("fake provider stopped")

        code = execute(ui, work, on_interrupt=stopped)
        if code:
            raise typer.Exit(code)

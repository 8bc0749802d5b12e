"""The typer app: the global options, the options shared by commands, and each command.

`build_app` assembles it; each ``_add_*`` function registers one command (``generate`` and
``edit`` share one), and each command's body hands its work to `execute`.
"""

# No `from __future__ import annotations` here: typer reads the annotations of the commands at
# run time. typer itself is imported at the top: this module is imported only once `main` has
# checked that the ``[cli]`` extra is installed.

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from .. import ImageRequest, TierName, __version__
from ._args import batch_paths
from ._batch import BatchReport, interrupted_batch, print_summary, run_batch
from ._check import check_batch
from ._commands import (
    Settings,
    Started,
    api_key_in_use,
    download_task,
    generate_image,
    open_client,
    open_image_host,
    show_status,
)
from ._exit import CliError
from ._fake_server import add_fake_server
from ._gallery import write_gallery
from ._names import check_template
from ._options import (
    BatchFileArgument,
    BatchOutOption,
    CheckOption,
    ImageHostOption,
    JournalOption,
    MaxActiveOption,
    NameOption,
    NoJournalOption,
    NoSaveOption,
    OutOption,
    QuietOption,
    TaskIdArgument,
    TaskOptions,
    TaskTimeoutOption,
    TierOption,
    TimeoutOption,
    keyword,
    task_command,
)
from ._rows import open_batch_file
from ._ui import Ui, execute, setup_logging

__all__ = ["build_app"]


def _ui_for(ctx: typer.Context) -> tuple[Ui, Settings]:
    settings = cast("Settings", ctx.obj)
    ui = Ui(verbose=settings.verbose, secret=api_key_in_use(settings))
    if settings.verbose:
        setup_logging(ui.err, ui.secret)
    return ui, settings


def _finish(code: int) -> None:
    if code:
        raise typer.Exit(code)


def _show_version(value: bool) -> None:
    if value:
        print(f"nanobanana-async {__version__}")
        raise typer.Exit


def _root(
    ctx: typer.Context,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="The API key (default: the NANOBANANA_API_KEY environment variable).",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="The API host (default: NANOBANANA_BASE_URL, else https://aigptimage.com).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log requests and show tracebacks.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Generate and edit images with the Nano Banana API.

    Exit codes: 0 done, 1 API or task failure, 2 bad usage or input, 3 key refused or
    missing or out of credits, 130 interrupted.
    """
    ctx.obj = Settings(api_key=api_key, base_url=base_url, verbose=verbose)


def _one_task(
    ctx: typer.Context,
    build: Callable[[], ImageRequest],
    options: TaskOptions,
    image_host: str | None = None,
) -> None:
    ui, settings = _ui_for(ctx)
    if options.name is not None:
        try:
            check_template(options.name)
        except CliError as exc:
            ui.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
    started = Started()

    def interrupted() -> None:
        if started.task_id is None:
            ui.error("interrupted; no task was created")
        else:
            ui.error(
                f"interrupted; task {started.task_id} goes on at the provider: "
                f"nanobanana download {started.task_id} --wait"
            )

    async def work() -> int:
        return await generate_image(
            ui,
            settings,
            build,
            out=options.out,
            timeout=options.timeout,
            wait=options.wait,
            started=started,
            image_host=image_host,
            name=options.name,
        )

    _finish(execute(ui, work, on_interrupt=interrupted))


def _add_generate_and_edit(app: typer.Typer) -> None:
    def prompt(help: str) -> inspect.Parameter:
        argument = typer.Argument(help=help, show_default=False)
        return keyword("prompt", Annotated[str, argument], inspect.Parameter.empty)

    def generate(ctx: typer.Context, prompt: str, **options: Any) -> None:
        """Draw an image from a prompt and save it (prints the saved paths)."""
        task = TaskOptions(**options)
        _one_task(ctx, lambda: task.request(prompt), task)

    def edit(
        ctx: typer.Context, prompt: str, image: list[str], image_host: str | None, **options: Any
    ) -> None:
        """Edit images given by URL or file and save the result (prints the saved paths)."""
        task = TaskOptions(**options)
        _one_task(ctx, lambda: task.request(prompt, image), task, image_host)

    image = typer.Option(
        "--image",
        "-i",
        help="An input image: a public https:// URL, or a local file published through "
        "--image-host (1 to 10; repeat the option).",
        show_default=False,
    )
    app.command()(task_command(generate, prompt("What to draw.")))
    app.command()(
        task_command(
            edit,
            prompt("The edit to make."),
            keyword("image", Annotated[list[str], image], inspect.Parameter.empty),
            keyword("image_host", ImageHostOption, None),
        )
    )


def _add_batch(app: typer.Typer, argv: Sequence[str]) -> None:
    @app.command()
    def batch(
        ctx: typer.Context,
        file: BatchFileArgument,
        out: BatchOutOption = None,
        journal: JournalOption = None,
        no_save: NoSaveOption = False,
        no_journal: NoJournalOption = False,
        check: CheckOption = False,
        name: NameOption = None,
        tier: TierOption = None,
        max_active: MaxActiveOption = None,
        timeout: TaskTimeoutOption = 3600.0,
        quiet: QuietOption = False,
        image_host: ImageHostOption = None,
    ) -> None:
        """Run a file of requests (JSONL, CSV, or one prompt per line), resumable, with a gallery.

        Fields (JSONL) or columns (CSV): prompt, image_urls (CSV: separated by spaces or |;
        URLs, or files relative to the batch file, published through --image-host),
        image_size or aspect_ratio, output_format, nsfw_checker, name (the file name). A .txt
        file (or any file that is neither) holds one prompt per line. Images are saved in
        FILE's name + '-out' with an index.html gallery, and the run is journaled there:
        running the same command again resumes without paying twice. A row that cannot be
        read or breaks a rule becomes a failed outcome naming its line; nothing is sent for
        it. Exit code 0 if every row succeeded, 3 if the key or credits stopped the batch, 2
        if a row was invalid, else 1.
        """
        ui, settings = _ui_for(ctx)
        try:
            if check:
                _finish(check_batch(ui, file))
                return
            if name is not None:
                check_template(name)
            out, journal = batch_paths(file, out, journal, no_save=no_save, no_journal=no_journal)
            handle, rows, total = open_batch_file(file)
        except CliError as exc:
            ui.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        report = BatchReport(out=out, total=total, name_template=name)

        async def work() -> int:
            async with (
                open_image_host(image_host) as host,
                open_client(settings, image_host=host) as client,
            ):
                await run_batch(
                    ui,
                    client,
                    rows,
                    report,
                    journal=journal,
                    tier=cast("TierName | None", tier),
                    max_active=max_active,
                    task_timeout=timeout,
                    quiet=quiet,
                )
            assert report.final is not None
            if report.final.submitted == 0:
                raise CliError(f"{file} holds no requests")
            print_summary(ui, report)
            return report.exit_code()

        def interrupted() -> None:
            interrupted_batch(ui, report, journal, argv)

        with handle:
            code = execute(ui, work, on_interrupt=interrupted)
        if out is not None and report.entries:
            gallery = write_gallery(
                out, report.entries, report.final, title=f"nanobanana batch {file.name}"
            )
            ui.info(f"Gallery: {gallery}")
        _finish(code)


def _add_status_and_download(app: typer.Typer) -> None:
    @app.command()
    def status(
        ctx: typer.Context,
        task_id: TaskIdArgument,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Print a task's state, result URLs or failure."""
        ui, settings = _ui_for(ctx)

        async def work() -> int:
            return await show_status(ui, settings, task_id, as_json=as_json)

        _finish(execute(ui, work))

    @app.command()
    def download(
        ctx: typer.Context,
        task_id: TaskIdArgument,
        out: OutOption = Path("."),
        wait: Annotated[
            bool, typer.Option("--wait", help="Wait for the task to finish first.")
        ] = False,
        timeout: TimeoutOption = 600.0,
    ) -> None:
        """Save the images of a finished task (prints the saved paths)."""
        ui, settings = _ui_for(ctx)

        async def work() -> int:
            return await download_task(ui, settings, task_id, out=out, wait=wait, timeout=timeout)

        _finish(execute(ui, work))


def _add_demo(app: typer.Typer, argv: Sequence[str]) -> None:
    @app.command()
    def demo(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the images.")] = Path(
            "nanobanana-demo"
        ),
        count: Annotated[int, typer.Option(min=1, max=200, help="How many images to make.")] = 20,
    ) -> None:
        """Run a batch against a fake provider on this machine: no API key, no network."""
        # Imported here: the fake provider is only needed by this command.
        from ._demo import run_demo

        ui, _ = _ui_for(ctx)
        report = BatchReport(out=out, total=count)

        async def work() -> int:
            return await run_demo(ui, report, count=count)

        def interrupted() -> None:
            interrupted_batch(ui, report, None, argv)

        _finish(execute(ui, work, on_interrupt=interrupted))


def build_app(argv: Sequence[str]) -> typer.Typer:
    """The ``nanobanana`` app.

    Args:
        argv: The arguments it runs with, without the program name: the resume hint after
            Ctrl-C repeats them (without the key).
    """
    app = typer.Typer(
        name="nanobanana",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    _add_generate_and_edit(app)
    _add_batch(app, argv)
    _add_status_and_download(app)
    _add_demo(app, argv)
    add_fake_server(app)
    return app

"""The options the commands take, written once: typer copies them into each command.

``generate`` and ``edit`` share most of theirs: `task_command` gives both the signature typer
reads, and `TaskOptions` takes the values typer passes for them.
"""

# No `from __future__ import annotations` here: typer reads these annotations at run time.

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast

import attrs
import typer

from .. import IMAGE_SIZES, ImageRequest, ImageToImage, TextToImage
from ._commands import IMAGE_HOST_VARIABLE
from ._names import NAME_FIELDS
from ._rows import image_item

# Options that several commands take; typer copies them for each command.
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Where to save the images.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="The most seconds to wait for the image.")
]
TaskIdArgument = Annotated[str, typer.Argument(help="The task id.", show_default=False)]


# The options of `batch`.
BatchFileArgument = Annotated[
    Path,
    typer.Argument(
        help="A JSONL file (one object per line) or a CSV file with a header.",
        show_default=False,
    ),
]
BatchOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Save the images here as they complete [default: FILE's name + '-out', beside it].",
        show_default=False,
    ),
]
JournalOption = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        "-j",
        help="The SQLite journal that makes a re-run resume, never paying twice "
        "[default: journal.sqlite in the --out folder].",
        show_default=False,
    ),
]
NoSaveOption = Annotated[
    bool, typer.Option("--no-save", help="Print the result URLs (they expire) instead of saving.")
]
NoJournalOption = Annotated[
    bool, typer.Option("--no-journal", help="Keep no journal: a re-run creates every task again.")
]
CheckOption = Annotated[
    bool,
    typer.Option(
        "--check", help="Validate the whole file and say what would be sent; send nothing."
    ),
]
_NAME_HELP = "File names of the saved images, a template of " + ", ".join(
    f"{{{name}}}" for name in NAME_FIELDS
)
NameOption = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", help=_NAME_HELP + ", e.g. '{index:03d}-{slug}'.", show_default=False
    ),
]
TierOption = Annotated[
    str | None,
    typer.Option(help="Your key's tier (free, basic, ...), to start from its limits."),
]
MaxActiveOption = Annotated[
    int | None, typer.Option(help="Your key's active-task limit, if you know it.")
]
TaskTimeoutOption = Annotated[
    float, typer.Option("--timeout", help="The most seconds to follow one task.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No line per finished request.")]
ImageHostOption = Annotated[
    str | None,
    typer.Option(
        "--image-host",
        envvar=IMAGE_HOST_VARIABLE,
        help="Where local input images are published for the provider: s3://bucket/prefix "
        "(S3 or S3-compatible; AWS_* variables give credentials and endpoint).",
        show_default=False,
    ),
]


def keyword(name: str, annotation: object, default: object) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


_SIZE_HELP = f"The output ratio: {', '.join(IMAGE_SIZES)}. [default: 1:1]"

# The options of `generate` and `edit`, written once: `_task_command` gives both commands the
# signature typer reads, and `TaskOptions` takes the values typer passes for them.
_TASK_OPTIONS = (
    keyword(
        "size",
        Annotated[
            str | None,
            typer.Option("--size", "--aspect-ratio", "-s", help=_SIZE_HELP, show_default=False),
        ],
        None,
    ),
    keyword(
        "output_format",
        Annotated[str, typer.Option("--format", "-f", help="The file format: png or jpeg.")],
        "png",
    ),
    keyword("out", OutOption, Path(".")),
    keyword("timeout", TimeoutOption, 600.0),
    keyword(
        "nsfw_checker",
        Annotated[
            bool,
            typer.Option(
                "--nsfw-checker/--no-nsfw-checker",
                help="Whether the provider runs its safety checker.",
            ),
        ],
        True,
    ),
    keyword(
        "wait",
        Annotated[
            bool,
            typer.Option(
                "--wait/--no-wait", help="Wait for the image, or print the task id at once."
            ),
        ],
        True,
    ),
    keyword("name", NameOption, None),
)


@attrs.frozen(kw_only=True)
class TaskOptions:
    """The values of the options `generate` and `edit` share."""

    size: str | None
    output_format: str
    out: Path
    timeout: float
    nsfw_checker: bool
    wait: bool
    name: str | None

    def request(self, prompt: str, image_urls: list[str] | None = None) -> ImageRequest:
        """The request these options ask for: an edit if there are images.

        An image that is not a URL is a local file (see `image_item`).
        """
        options: dict[str, Any] = {
            "image_size": self.size,
            "output_format": self.output_format,
            "nsfw_checker": self.nsfw_checker,
        }
        if image_urls is None:
            return TextToImage(prompt=prompt, **options)
        images = [image_item(image) for image in image_urls]
        return ImageToImage(prompt=prompt, image_urls=images, **options)


def task_command(command: Callable[..., None], *leading: inspect.Parameter) -> Callable[..., None]:
    """``command`` with the signature typer reads: the context, ``leading``, the task options."""
    context = keyword("ctx", typer.Context, inspect.Parameter.empty)
    cast("Any", command).__signature__ = inspect.Signature([context, *leading, *_TASK_OPTIONS])
    return command

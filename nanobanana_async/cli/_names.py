"""``--name`` templates: the file names saved images get, e.g. ``{index}-{slug}``.

A template names the fields below in braces, with Python's format specs
(``{index:04d}``); the result is made safe for a file name (anything but letters, digits,
``.``, ``_`` and ``-`` becomes ``_``). A template is checked before anything is sent.
"""

import re
import string

from ._exit import CliError

__all__ = ["NAME_FIELDS", "check_template", "file_stem", "slug"]

NAME_FIELDS = {
    "index": "the request's number in the batch, from 1 (1 for generate and edit)",
    "line": "the line of the batch file the request is on (1 for generate and edit)",
    "slug": "the first words of the prompt, lowercase, joined by '-'",
    "task_id": "the provider's task id",
    "name": "the row's name field (batch), else the slug",
}
"""The fields a ``--name`` template may use, and what each is."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STOP = frozenset({"a", "an", "the", "of", "on", "in", "with", "at", "and", "to"})


def slug(prompt: str, words: int = 4) -> str:
    """The first ``words`` content words of ``prompt``, lowercase, joined by ``-``."""
    found = [w for w in re.findall(r"[a-z0-9]+", prompt.lower()) if w not in _STOP]
    return "-".join(found[:words]) or "image"


def _sample(template: str) -> str:
    return template.format(index=1, line=1, slug="a-banana", task_id="task", name="name")


def check_template(template: str) -> str:
    """``template`` if it names only known fields and formats; raises `CliError` (exit 2)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        unknown = [field for field in fields if field.split(".")[0] not in NAME_FIELDS]
        if unknown:
            raise CliError(
                f"--name: unknown field {{{unknown[0]}}}; the fields are "
                + ", ".join(f"{{{name}}}" for name in NAME_FIELDS)
            )
        stem = _sample(template)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise CliError(f"--name: not a valid template ({exc})") from None
    if not _UNSAFE.sub("", stem).strip("._"):
        raise CliError("--name: the template makes an empty file name")
    return template


def file_stem(
    template: str,
    *,
    index: int,
    line: int,
    prompt: str,
    task_id: str,
    name: str | None = None,
) -> str:
    """The file name (no suffix) ``template`` gives for one image, made safe."""
    text_slug = slug(prompt)
    stem = template.format(
        index=index, line=line, slug=text_slug, task_id=task_id, name=name or text_slug
    )
    return _UNSAFE.sub("_", stem).strip(".") or f"image-{index}"

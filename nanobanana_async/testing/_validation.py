"""Validation of ``createTask`` bodies, following the provider's pages (``seeds/``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .._download import is_loopback_host

__all__ = [
    "IMAGE_SIZES",
    "MAX_IMAGE_URLS",
    "MAX_PROMPT_CHARS",
    "MODELS",
    "OUTPUT_FORMATS",
    "TEXT_TO_IMAGE",
    "IMAGE_TO_IMAGE",
    "validate_create",
]

TEXT_TO_IMAGE = "nano-banana-text-to-image"
IMAGE_TO_IMAGE = "nano-banana-image-to-image"
MODELS = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE)
IMAGE_SIZES = ("1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto")
OUTPUT_FORMATS = ("png", "jpeg")
MAX_PROMPT_CHARS = 20000
MAX_IMAGE_URLS = 10


def _check_image_urls(urls: object) -> str | None:
    if urls is None:
        return f"input.image_urls is required for {IMAGE_TO_IMAGE}"
    if not isinstance(urls, list):
        return "input.image_urls must be a list of https:// URLs"
    if not 1 <= len(urls) <= MAX_IMAGE_URLS:  # pyright: ignore[reportUnknownArgumentType]
        return f"input.image_urls must hold 1 to {MAX_IMAGE_URLS} URLs"
    for index, url in enumerate(urls):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        field = f"input.image_urls[{index}]"
        if not isinstance(url, str):
            return f"{field} must be a string"
        if url[:5].lower() == "data:":
            return f"{field}: data: URLs are not supported, use a public https:// URL"
        parts = urlsplit(url)
        # Plain http only on loopback: the fake fetches such images itself (see `_fetch`).
        scheme = parts.scheme.lower()
        if not parts.hostname or not (
            scheme == "https" or (scheme == "http" and is_loopback_host(parts.hostname))
        ):
            return f"{field} must be a public https:// URL"
    return None


def _check_input(model: str, fields: dict[str, Any]) -> str | None:
    prompt = fields.get("prompt")
    if prompt is None:
        return "input.prompt is required"
    if not isinstance(prompt, str):
        return "input.prompt must be a string"
    if not prompt.strip():
        return "input.prompt must not be empty"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"input.prompt must be at most {MAX_PROMPT_CHARS} characters"
    if model == IMAGE_TO_IMAGE:
        problem = _check_image_urls(fields.get("image_urls"))
        if problem:
            return problem
    for key in ("image_size", "aspect_ratio"):
        value = fields.get(key)
        if value is not None and value not in IMAGE_SIZES:
            return f"input.{key} must be one of {', '.join(IMAGE_SIZES)}"
    output_format = fields.get("output_format")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        return "input.output_format must be png or jpeg"
    nsfw_checker = fields.get("nsfw_checker")
    if nsfw_checker is not None and not isinstance(nsfw_checker, bool):
        return "input.nsfw_checker must be a boolean"
    return None


def validate_create(payload: object) -> tuple[int, str] | None:
    """Check a parsed ``createTask`` body.

    Returns:
        ``None`` if the body is acceptable, else ``(code, message)``: 400 for a body that is not
        a request at all (not an object, unknown model, no ``input``), 422 for a field that
        breaks the documented rules; the message names the field.
    """
    if not isinstance(payload, dict):
        return 400, "request body must be a JSON object"
    model = payload.get("model")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if model is None:
        return 400, "model is required"
    if model not in MODELS:
        return 400, f"model must be one of {', '.join(MODELS)}"
    fields = payload.get("input")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if fields is None:
        return 400, "input is required"
    if not isinstance(fields, dict):
        return 400, "input must be a JSON object"
    problem = _check_input(model, fields)  # pyright: ignore[reportUnknownArgumentType]
    return None if problem is None else (422, problem)

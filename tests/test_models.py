"""The request models check every rule of the provider's docs when they are built."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanobanana_async import (
    IMAGE_SIZES,
    ImageToImage,
    InvalidRequestError,
    LocalImage,
    Task,
    TaskResult,
    TaskState,
    TextToImage,
)

PNG = "https://cdn.example.com/in.png"


class TestTextToImage:
    def test_defaults_follow_the_docs(self) -> None:
        request = TextToImage(prompt="a banana")
        assert request.model == "nano-banana-text-to-image"
        assert request.image_size == "1:1"
        assert request.aspect_ratio == "1:1"
        assert request.output_format == "png"
        assert request.nsfw_checker is True

    @pytest.mark.parametrize("size", IMAGE_SIZES)
    def test_every_documented_size_is_accepted(self, size: Any) -> None:
        assert TextToImage(prompt="x", image_size=size).image_size == size

    def test_the_documented_sizes(self) -> None:
        assert set(IMAGE_SIZES) == {
            "1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto",
        }  # fmt: skip

    def test_aspect_ratio_is_an_alias_of_image_size(self) -> None:
        request = TextToImage(prompt="x", aspect_ratio="16:9")
        assert request.image_size == "16:9"
        assert request.aspect_ratio == "16:9"
        assert TextToImage(prompt="x", image_size="4:3", aspect_ratio="4:3").image_size == "4:3"

    def test_aspect_ratio_that_contradicts_image_size_is_refused(self) -> None:
        with pytest.raises(InvalidRequestError) as info:
            TextToImage(prompt="x", image_size="1:1", aspect_ratio="16:9")
        assert info.value.field == "aspect_ratio"

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"image_size": "2:1"}, "image_size"),
            ({"image_size": ""}, "image_size"),
            ({"aspect_ratio": ""}, "image_size"),
            ({"aspect_ratio": "square"}, "image_size"),
            ({"output_format": "gif"}, "output_format"),
            ({"output_format": "PNG"}, "output_format"),
            ({"nsfw_checker": "yes"}, "nsfw_checker"),
            ({"nsfw_checker": 1}, "nsfw_checker"),
        ],
    )
    def test_values_outside_the_rules_are_refused(self, kwargs: Any, field: str) -> None:
        with pytest.raises(InvalidRequestError) as info:
            TextToImage(prompt="x", **kwargs)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")

    def test_jpg_gets_a_hint(self) -> None:
        with pytest.raises(InvalidRequestError, match="write 'jpeg'"):
            TextToImage(prompt="x", output_format="jpg")  # type: ignore[arg-type]

    def test_jpeg_and_no_checker(self) -> None:
        request = TextToImage(prompt="x", output_format="jpeg", nsfw_checker=False)
        assert (request.output_format, request.nsfw_checker) == ("jpeg", False)

    @pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
    def test_blank_prompt_is_refused(self, prompt: str) -> None:
        with pytest.raises(InvalidRequestError, match="prompt: is required"):
            TextToImage(prompt=prompt)

    def test_prompt_must_be_a_string(self) -> None:
        with pytest.raises(InvalidRequestError, match="prompt: must be a string, not int"):
            TextToImage(prompt=3)  # type: ignore[arg-type]

    def test_prompt_of_20000_characters_is_the_limit(self) -> None:
        assert len(TextToImage(prompt="b" * 20_000).prompt) == 20_000
        with pytest.raises(InvalidRequestError, match="at most 20000 characters, got 20001"):
            TextToImage(prompt="b" * 20_001)

    def test_a_prompt_utf8_cannot_carry_is_refused_when_built(self) -> None:
        with pytest.raises(InvalidRequestError, match="prompt: holds a lone surrogate"):
            TextToImage(prompt="a banana \ud800")
        assert TextToImage(prompt="a banana \U0001f34c").prompt.endswith("\U0001f34c")

    def test_is_frozen_and_compares_by_value(self) -> None:
        request = TextToImage(prompt="x")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            request.prompt = "y"  # type: ignore[misc]
        assert request == TextToImage(prompt="x")
        assert hash(request) == hash(TextToImage(prompt="x"))

    def test_evolve_validates_again(self) -> None:
        request = TextToImage(prompt="x")
        with pytest.raises(InvalidRequestError):
            attrs.evolve(request, image_size="7:5")

    def test_invalid_request_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="prompt"):
            TextToImage(prompt="")


class TestImageToImage:
    def test_valid_edit(self) -> None:
        request = ImageToImage(prompt="make it gold", image_urls=[PNG], aspect_ratio="9:16")
        assert request.model == "nano-banana-image-to-image"
        assert request.image_urls == (PNG,)
        assert request.image_size == request.aspect_ratio == "9:16"

    def test_urls_are_frozen_into_a_tuple_from_any_iterable(self) -> None:
        urls = [f"https://cdn.example.com/{i}.png" for i in range(3)]
        request = ImageToImage(prompt="x", image_urls=(u for u in urls))
        assert request.image_urls == tuple(urls)
        urls.append("https://late.example.com/x.png")
        assert len(request.image_urls) == 3

    def test_one_to_ten_urls(self) -> None:
        assert len(ImageToImage(prompt="x", image_urls=[PNG] * 10).image_urls) == 10
        with pytest.raises(InvalidRequestError, match="1 to 10 images, got 11"):
            ImageToImage(prompt="x", image_urls=[PNG] * 11)
        with pytest.raises(InvalidRequestError, match="1 to 10 images, got 0"):
            ImageToImage(prompt="x", image_urls=[])

    @pytest.mark.parametrize("urls", [PNG, PNG.encode(), None, 5])
    def test_urls_must_be_a_list(self, urls: Any) -> None:
        with pytest.raises(InvalidRequestError) as info:
            ImageToImage(prompt="x", image_urls=urls)
        assert info.value.field == "image_urls"

    @pytest.mark.parametrize(
        "url",
        [
            "http://cdn.example.com/in.png",
            "ftp://cdn.example.com/in.png",
            "file:///etc/passwd",
            "https://",
            "https:///path-only.png",
            "https://cdn.example.com/a b.png",
            "https://[::1/x.png",
        ],
    )
    def test_only_public_https_urls(self, url: str) -> None:
        with pytest.raises(InvalidRequestError, match="public https://") as info:
            ImageToImage(prompt="x", image_urls=[PNG, url])
        assert info.value.field == "image_urls[1]"

    @pytest.mark.parametrize(
        "path",
        [
            "/etc/hostname",  # exists on most machines
            "/no/such/file.png",
            "C:\\images\\in.png",
            "in.png",
            "iVBORw0KGgoAAAANSUhEUg",
            ".",
            "\x00",
            "https://cdn.example.com/a\x00.png",
            "https://cdn.example.com/\ud800.png",
            "https://cdn.example.com/\u202egnp.exe",
        ],
    )
    def test_a_str_is_a_url_never_a_path(self, path: str) -> None:
        """A web app may pass a visitor's string through: it is never read from disk, and the
        words are the same whether the file exists or not (they tell nothing of the disk)."""
        with pytest.raises(InvalidRequestError) as info:
            ImageToImage(prompt="x", image_urls=[PNG, path])
        assert info.value.field == "image_urls[1]"
        assert str(info.value) == (
            f"image_urls[1]: must be a public https:// URL, got {path!r}; a str is always a "
            "URL, never read from disk: pass a local file as a pathlib.Path "
            "(image_urls=[Path('photo.png')]) or its bytes"
        )

    def test_a_str_naming_an_image_file_is_not_read(self, tmp_path: Path) -> None:
        photo = tmp_path / "photo.png"
        photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
        with pytest.raises(InvalidRequestError, match="a str is always a URL"):
            ImageToImage(prompt="x", image_urls=[str(photo)])
        (image,) = ImageToImage(prompt="x", image_urls=[photo]).image_urls
        assert isinstance(image, LocalImage)
        assert image.path == photo

    def test_a_local_image_built_beforehand_is_taken_as_it_is(self) -> None:
        image = LocalImage.from_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
        assert ImageToImage(prompt="x", image_urls=[image, PNG]).image_urls == (image, PNG)

    @pytest.mark.parametrize("path", [Path("photo\x00.png"), Path("/tmp/\x00")])
    def test_a_path_with_a_nul_is_an_invalid_request(self, path: Path) -> None:
        with pytest.raises(InvalidRequestError, match="not a valid path") as info:
            ImageToImage(prompt="x", image_urls=[path])
        assert info.value.field == "image_urls[0]"

    def test_a_path_like_that_is_not_a_str_path_is_refused(self) -> None:
        class BytesPath:
            def __fspath__(self) -> bytes:
                return b"/tmp/photo.png"

        class BrokenPath:
            def __fspath__(self) -> object:
                return 5

        for item in (BytesPath(), BrokenPath()):
            with pytest.raises(InvalidRequestError, match=r"an os\.PathLike of str"):
                ImageToImage(prompt="x", image_urls=[item])  # type: ignore[list-item]

    def test_an_endless_iterable_is_refused_not_read_for_ever(self) -> None:
        with pytest.raises(InvalidRequestError, match="1 to 10 images, got more than 10"):
            ImageToImage(prompt="x", image_urls=itertools.repeat(PNG))

    def test_data_urls_are_refused_with_a_hint(self) -> None:
        with pytest.raises(InvalidRequestError, match="data: URLs are not accepted") as info:
            ImageToImage(prompt="x", image_urls=["data:image/png;base64,iVBORw0KGgo="])
        assert info.value.field == "image_urls[0]"

    def test_bytes_must_be_an_image(self) -> None:
        with pytest.raises(InvalidRequestError, match=r"image_urls\[0\]: .*not a JPEG, PNG"):
            ImageToImage(prompt="x", image_urls=[b"https://x.example/a.png"])

    def test_other_items_are_refused(self) -> None:
        with pytest.raises(InvalidRequestError, match=r"image_urls\[0\]: must be an https://"):
            ImageToImage(prompt="x", image_urls=[5])  # type: ignore[list-item]

    def test_the_prompt_is_checked_too(self) -> None:
        with pytest.raises(InvalidRequestError) as info:
            ImageToImage(prompt="", image_urls=[PNG])
        assert info.value.field == "prompt"

    def test_other_fields_are_checked_too(self) -> None:
        with pytest.raises(InvalidRequestError) as info:
            ImageToImage(prompt="x", image_urls=[PNG], output_format="webp")  # type: ignore[arg-type]
        assert info.value.field == "output_format"
        with pytest.raises(InvalidRequestError) as info:
            ImageToImage(prompt="x", image_urls=[PNG], image_size="1:1", aspect_ratio="auto")
        assert info.value.field == "aspect_ratio"


class TestTask:
    def test_state_members(self) -> None:
        assert [s for s in TaskState if s.is_finished] == [TaskState.SUCCESS, TaskState.FAIL]
        assert TaskState("waiting") is TaskState.WAITING
        assert TaskState.UNKNOWN.is_finished is False

    def test_elapsed_from_the_provider_timestamps(self) -> None:
        created = datetime(2025, 9, 11, 10, 0, 0, tzinfo=UTC)
        done = datetime(2025, 9, 11, 10, 0, 12, tzinfo=UTC)
        task = Task(task_id="t", state=TaskState.SUCCESS, create_time=created, complete_time=done)
        assert task.is_finished
        assert task.elapsed == 12.0
        assert Task(task_id="t", create_time=created).elapsed is None
        # A clock skew never makes a negative duration.
        assert Task(task_id="t", create_time=done, complete_time=created).elapsed == 0.0

    def test_defaults_and_equality_ignore_param(self) -> None:
        task = Task(task_id="t")
        assert task.state is TaskState.UNKNOWN
        assert not task.is_finished
        assert task.urls == ()
        assert Task(task_id="t", param={"a": 1}) == Task(task_id="t", param={"b": 2})
        assert "param" not in repr(Task(task_id="t", param={"secret": 1}))

    def test_result_repr_leaves_the_task_out(self) -> None:
        task = Task(task_id="t", state=TaskState.SUCCESS, urls=("https://x.example/a.png",))
        result = TaskResult(task_id="t", urls=task.urls, task=task)
        assert result.task is task
        assert "task=" not in repr(result)
        assert "https://x.example/a.png" in repr(result)


# -- property-based: any input either builds a valid model or raises InvalidRequestError ------

urls = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, path: f"{scheme}{host}{path}",
        st.sampled_from(["https://", "http://", "HTTPS://", "data:", "", "https:/", "file://"]),
        st.text(max_size=20),
        st.text(max_size=20),
    ),
)


@given(
    prompt=st.one_of(st.text(max_size=50), st.just("p" * 20_001), st.integers()),
    image_urls=st.one_of(st.lists(urls, max_size=12), urls, st.none()),
    image_size=st.one_of(st.none(), st.sampled_from(IMAGE_SIZES), st.text(max_size=5)),
    output_format=st.one_of(st.sampled_from(["png", "jpeg", "jpg"]), st.text(max_size=5)),
    nsfw_checker=st.one_of(st.booleans(), st.integers(), st.none()),
)
def test_any_input_builds_a_valid_edit_or_raises_invalid_request(
    prompt: Any, image_urls: Any, image_size: Any, output_format: Any, nsfw_checker: Any
) -> None:
    try:
        request = ImageToImage(
            prompt=prompt,
            image_urls=image_urls,
            image_size=image_size,
            output_format=output_format,
            nsfw_checker=nsfw_checker,
        )
    except InvalidRequestError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.field
        assert str(error).startswith(error.field)
        return
    assert isinstance(request.prompt, str)
    assert 0 < len(request.prompt) <= 20_000
    assert request.prompt.strip()
    assert 1 <= len(request.image_urls) <= 10
    assert all(url.lower().startswith("https://") for url in request.image_urls)
    assert request.image_size in IMAGE_SIZES
    assert request.output_format in ("png", "jpeg")
    assert isinstance(request.nsfw_checker, bool)


@given(prompt=st.text(max_size=100), size=st.one_of(st.none(), st.text(max_size=6)))
def test_any_text_prompt_builds_or_raises_invalid_request(prompt: str, size: Any) -> None:
    try:
        request = TextToImage(prompt=prompt, aspect_ratio=size)
    except InvalidRequestError:
        assert not prompt.strip() or size not in (None, *IMAGE_SIZES)
    else:
        assert request.prompt == prompt
        assert request.image_size == (size or "1:1")

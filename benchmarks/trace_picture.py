"""A picture of one traced request, drawn from the spans OpenTelemetry exported.

    python benchmarks/trace_picture.py     # writes docs/images/generate-trace.png

A web handler's span (``POST /images``, as the FastAPI example's middleware starts it) awaits
``generate()`` and then ``save_result()`` against the fake provider on this machine, in real
time. Another visitor holds the key's only active-task slot (a task of 3 seconds) when the
request comes, so ``generate()`` first waits for it; its first create meets a 500; its own
task takes 4 seconds, so the polls, timed from the 3 seconds seen, close in on its end. The
spans come from the OpenTelemetry SDK's in-memory exporter and are drawn as they are: one bar
per span, indented under its parent, the polls as ticks on the wait (``nanobanana.poll``
events), the pacer's hold (``nanobanana.pacer.wait``) shaded at the start of each create.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from nanobanana_async import Telemetry, TextToImage
from nanobanana_async.testing import FakeNanoBanana

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "generate-trace.png"
COLOURS = {
    "nanobanana.slot_wait": "#9e9e9e",
    "nanobanana.create": "#43a047",
    "nanobanana.wait": "#1e88e5",
    "nanobanana.download": "#8e24aa",
}
FAILED = "#e53935"
CALL = "#ffca28"
APP = "#5d4037"


async def trace_one_request(spans: InMemorySpanExporter) -> None:
    """Run the scenario; the spans end up in ``spans``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    fake = FakeNanoBanana(
        tier="basic",
        max_active=1,
        duration=lambda body: 4.0 if "space" in body["input"]["prompt"] else 3.0,
        seed=2,
    )
    fake.script("create", ["ok", "500"])  # the other visitor's create, then ours fails once
    app = provider.get_tracer("the web app")
    async with (
        fake.client(telemetry=Telemetry(tracer_provider=provider), max_active=1) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(client.generate, TextToImage(prompt="another visitor's banana"))
        await anyio.sleep(0.5)
        with app.start_as_current_span("POST /images"), tempfile.TemporaryDirectory() as folder:
            result = await client.generate(TextToImage(prompt="a banana in space"))
            await client.save_result(result, folder)


def ours(spans: Sequence[ReadableSpan]) -> list[tuple[int, ReadableSpan]]:
    """The request's spans, depth first in start order, with their depth."""
    (root,) = [span for span in spans if span.name == "POST /images"]
    below: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            below.setdefault(span.parent.span_id, []).append(span)
    ordered: list[tuple[int, ReadableSpan]] = []

    def visit(span: ReadableSpan, depth: int) -> None:
        ordered.append((depth, span))
        assert span.context is not None
        for child in sorted(below.get(span.context.span_id, []), key=start):
            visit(child, depth + 1)

    visit(root, 0)
    return ordered


def start(span: ReadableSpan) -> int:
    assert span.start_time is not None
    return span.start_time


def end(span: ReadableSpan) -> int:
    assert span.end_time is not None
    return span.end_time


def label(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    name = span.name.removeprefix("nanobanana.")
    if span.name == "nanobanana.create":
        status = attributes.get("http.response.status_code", "no answer")
        return f"create #{attributes.get('nanobanana.attempt')} ({status})"
    if span.name == "nanobanana.wait":
        polls = attributes.get("nanobanana.polls")
        return f"wait ({polls} poll{'' if polls == 1 else 's'})"
    if span.name == "nanobanana.download":
        return f"download ({attributes.get('http.response.body.size')} bytes)"
    if span.name == "nanobanana.generate":
        return f"generate ({attributes.get('nanobanana.attempts')} creates)"
    return name


def colour(span: ReadableSpan) -> str:
    if span.status.status_code is StatusCode.ERROR:
        return FAILED
    if span.name == "POST /images":
        return APP
    return COLOURS.get(span.name, CALL)


def draw(rows: list[tuple[int, ReadableSpan]], out: Path) -> None:
    zero = start(rows[0][1])
    figure, axes = plt.subplots(figsize=(10.5, 0.45 * len(rows) + 1.3), dpi=110)
    for row, (_, span) in enumerate(rows):
        left = (start(span) - zero) / 1e9
        width = max((end(span) - start(span)) / 1e9, 0.02)
        axes.barh(row, width, left=left, height=0.6, color=colour(span), edgecolor="black", lw=0.5)
        held = float((span.attributes or {}).get("nanobanana.pacer.wait", 0.0))
        if held > 0.02:
            axes.barh(row, held, left=left - held, height=0.6, color="#cfd8dc", hatch="//")
        for event in span.events:
            if event.name == "nanobanana.poll":
                at = (event.timestamp - zero) / 1e9
                done = (event.attributes or {}).get("nanobanana.task.state") == "success"
                axes.plot([at, at], [row - 0.38, row + 0.38], color="black", lw=2.2 if done else 1)
    # Left-aligned labels, indented under their parent (figure spaces survive, unlike blanks).
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(
        ["\u2007\u2007\u2007" * depth + label(span) for depth, span in rows], ha="left", fontsize=9
    )
    axes.tick_params(axis="y", length=0, pad=190)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the request came in")
    axes.set_xlim(left=0)
    axes.grid(axis="x", alpha=0.3)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.set_title(
        "One traced request: POST /images awaits generate() and save_result()\n"
        "(another visitor holds the key's only slot; the first create meets a 500; "
        "ticks are polls)",
        fontsize=10,
    )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    spans = InMemorySpanExporter()
    anyio.run(trace_one_request, spans)
    rows = ours(spans.get_finished_spans())
    for depth, span in rows:
        print(f"{'  ' * depth}{span.name}: {(end(span) - start(span)) / 1e9:.2f} s")
    draw(rows, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

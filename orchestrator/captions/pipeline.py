"""caption_dataset: every image in a folder gets a ``.txt`` caption with the trigger token, in batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from orchestrator.captions.base import CaptionerSettings, Task, make_captioner
from orchestrator.captions.cleanup import clean_caption
from orchestrator.captions.files import find_images, open_image, read_caption, write_caption
from orchestrator.captions.tokens import USABLE, TokenCounter
from orchestrator.captions.trigger import apply_trigger
from orchestrator.errors import LoraforgeError

if TYPE_CHECKING:
    from PIL.Image import Image

Decoded = tuple["Image | None", "str | None"]  # (RGB image, None) or (None, why it cannot be read)
ProgressCallback = Callable[[int, int], None]  # (images done, images in total)


@dataclass
class CaptionResult:
    captioner: str
    model: str | None
    images: int = 0
    written: int = 0  # new captions from the captioner
    kept: int = 0  # existing captions left as they were (trigger added where missing)
    trigger_added: int = 0  # of the kept ones, how many got the trigger
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (image, reason)
    too_long: list[tuple[Path, int]] = field(default_factory=list)  # (image, tokens) over the text encoder window
    token_count: str = "estimated"  # how too_long was counted
    seconds: float = 0.0  # the whole run
    load_seconds: float = 0.0  # of which loading the model

    @property
    def images_per_second(self) -> float:
        """New captions per second once the model is loaded."""
        busy = self.seconds - self.load_seconds
        return self.written / busy if busy > 0 else 0.0


def caption_dataset(
    dataset: Path,
    *,
    captioner: str = "florence2",
    trigger: str | None = None,
    model: str | None = None,
    task: Task = "caption",
    mode: Literal["keep", "overwrite"] = "keep",
    batch_size: int = 8,
    device: str = "auto",
    separator: str = ", ",
    trust_remote_code: bool = False,
    template: str = "photo of {trigger}",
    general_threshold: float = 0.35,
    character_threshold: float = 0.85,
    on_progress: ProgressCallback | None = None,
) -> CaptionResult:
    """Write ``IMAGE.txt`` beside every image under ``dataset``.

    mode "keep": an image that already has a caption keeps it (only the missing trigger is added); "overwrite":
    every readable image is captioned anew. The trigger is prepended exactly once. Unreadable images are skipped
    and listed with the reason. The model is loaded only if at least one image needs a new caption.
    ``template`` is the template captioner's text; the thresholds are the WD14 tagger's minimum probabilities.
    """
    if mode not in ("keep", "overwrite"):
        raise LoraforgeError(f"unknown caption mode {mode!r}", "use 'keep' or 'overwrite'")
    if batch_size < 1:
        raise LoraforgeError(f"batch size must be at least 1, got {batch_size}", "pass --batch-size 1 or more")
    started = time.perf_counter()
    dataset = Path(dataset)
    images = find_images(dataset)
    result = CaptionResult(captioner=captioner, model=model, images=len(images))
    settings = CaptionerSettings(
        model=model,
        task=task,
        device=device,
        trigger=trigger,
        template=template,
        trust_remote_code=trust_remote_code,
        general_threshold=general_threshold,
        character_threshold=character_threshold,
    )
    engine = make_captioner(captioner, settings)  # validates names before any work
    count = TokenCounter()
    done = 0

    def finish(image: Path, caption: str) -> None:
        tokens = count(caption)
        if tokens > USABLE:
            result.too_long.append((image, tokens))

    todo: list[Path] = []
    for image in images:
        existing = read_caption(image) if mode == "keep" else None
        if existing is None:
            todo.append(image)
            continue
        text = apply_trigger(existing, trigger, separator)
        if text != existing:
            write_caption(image, text)
            result.trigger_added += 1
        result.kept += 1
        finish(image, text)
        done += 1
    if on_progress:
        on_progress(done, len(images))
    if todo:
        loading = time.perf_counter()
        engine.load()
        result.load_seconds = time.perf_counter() - loading
    for chunk, decoded in _decoded_batches(todo, batch_size):
        batch = []
        for image, (picture, reason) in zip(chunk, decoded, strict=True):
            if picture is None:
                result.skipped.append((image, reason or "unreadable"))
            else:
                batch.append((image, picture))
        if batch:
            captions = engine.caption([picture for _, picture in batch])
            for (image, _), raw in zip(batch, captions, strict=True):
                text = apply_trigger(clean_caption(raw), trigger, separator)
                write_caption(image, text)
                result.written += 1
                finish(image, text)
        done += len(chunk)
        if on_progress:
            on_progress(done, len(images))
    result.token_count = count.method
    result.seconds = time.perf_counter() - started
    return result


def _decoded_batches(todo: list[Path], batch_size: int) -> Iterator[tuple[list[Path], list[Decoded]]]:
    """Batches of decoded images; the next batch decodes in a thread while the model works on this one.

    One batch ahead, no more, so memory stays bounded by two batches whatever the dataset's size.
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if not chunks:
        return

    def decode(chunk: list[Path]) -> list[Decoded]:
        return [open_image(image) for image in chunk]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-decode") as pool:
        ahead = pool.submit(decode, chunks[0])
        for i, chunk in enumerate(chunks):
            decoded = ahead.result()
            if i + 1 < len(chunks):
                ahead = pool.submit(decode, chunks[i + 1])
            yield chunk, decoded

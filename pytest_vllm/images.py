"""Images for the vision suites: generated with Pillow, sent as base64 `data:` URLs.

`data_url(name)` encodes one of the named `PATTERNS` (each clearly different from the
others: solid colours, stripes, a checkerboard, seeded noise) as PNG or JPEG.
`corrupt_data_url()` is a well-formed data URL whose bytes are not an image.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

SIZE = 64
FORMATS = {"png": "PNG", "jpeg": "JPEG"}


def _solid(colour: tuple[int, int, int]) -> Callable[[], Image.Image]:
    def draw() -> Image.Image:
        from PIL import Image

        return Image.new("RGB", (SIZE, SIZE), colour)

    return draw


def _stripes() -> Image.Image:
    from PIL import Image

    image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    image.putdata([(0, 0, 0) if (x // 8) % 2 else (255, 255, 0) for y in range(SIZE) for x in range(SIZE)])
    return image


def _checkerboard() -> Image.Image:
    from PIL import Image

    image = Image.new("RGB", (SIZE, SIZE))
    image.putdata([(255, 255, 255) if (x // 16 + y // 16) % 2 else (0, 0, 0) for y in range(SIZE) for x in range(SIZE)])
    return image


def _noise() -> Image.Image:
    from PIL import Image

    rng = random.Random(0)
    return Image.frombytes("RGB", (SIZE, SIZE), bytes(rng.randrange(256) for _ in range(SIZE * SIZE * 3)))


PATTERNS: dict[str, Callable[[], Image.Image]] = {
    "red": _solid((220, 20, 20)),
    "blue": _solid((20, 40, 220)),
    "white": _solid((255, 255, 255)),
    "stripes": _stripes,
    "checkerboard": _checkerboard,
    "noise": _noise,
}


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    """`image` as the bytes of a `fmt` file ("png" or "jpeg")."""
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[fmt])
    return buffer.getvalue()


def data_url(name: str, fmt: str = "png") -> str:
    """Pattern `name` as a `data:image/<fmt>;base64,...` URL."""
    payload = base64.b64encode(encode(PATTERNS[name](), fmt)).decode()
    return f"data:image/{fmt};base64,{payload}"


def corrupt_data_url() -> str:
    """A valid base64 PNG data URL whose content is a truncated PNG (signature, then garbage)."""
    payload = encode(PATTERNS["red"]())[:24] + b"not the rest of a PNG" * 4
    return "data:image/png;base64," + base64.b64encode(payload).decode()


def image_part(url: str) -> dict:
    """An OpenAI chat content part carrying the image at `url`."""
    return {"type": "image_url", "image_url": {"url": url}}

"""``python -m pytest_vllm.fixture_models [NAME ...]``: build fixture models ahead of time."""

import sys
import time

from pytest_vllm.fixture_models import FIXTURE_MODELS, build


def main(argv: list[str]) -> None:
    """Build the named fixture models (default: all) and print their paths and build times."""
    for name in argv or FIXTURE_MODELS:
        start = time.perf_counter()
        path = build(name)
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])

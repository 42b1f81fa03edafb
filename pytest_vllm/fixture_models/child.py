"""The builder's child process: ``python -m pytest_vllm.fixture_models.child NAME OUT MODELS_JSON``.

Builds fixture model NAME into the folder OUT; MODELS_JSON maps the models it is built from
to their folders. Any failure ends it with a traceback and a non-zero exit code.
"""

import json
import sys
from pathlib import Path

from pytest_vllm.fixture_models import _builder


def main(argv: list[str]) -> None:
    name, out, models = argv
    _builder(name).build(Path(out), {dep: Path(path) for dep, path in json.loads(models).items()})


if __name__ == "__main__":
    main(sys.argv[1:])

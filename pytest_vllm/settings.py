"""The plugin's options: declared once, resolved once (CLI > env > ini > default)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

LAUNCHERS = ("subprocess",)  # the Launcher protocol admits more (docker is next)
FUZZ_MODES = ("replay", "seed", "explore")


def cache_root() -> Path:
    """Where pytest-vllm caches what is expensive: `$PYTEST_VLLM_CACHE`, else ~/.cache/pytest-vllm."""
    root = os.environ.get("PYTEST_VLLM_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "pytest-vllm"


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as http://localhost:8000")
    if parts.username or parts.password:
        raise ValueError("put credentials in --vllm-api-key, not in the URL")
    return value.rstrip("/").removesuffix("/v1")


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("expected a whole number of examples, 1 or more")
    return int(value)


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 0:
        raise ValueError("expected a positive number of seconds")
    return number


def _launcher(value: str) -> str:
    if value not in LAUNCHERS:
        raise ValueError(f"valid launchers: {', '.join(LAUNCHERS)}")
    return value


def _capability(value: str) -> tuple[str, bool]:
    from pytest_vllm.capabilities import CAPABILITIES

    name, _, state = value.partition("=")
    if name not in CAPABILITIES or state not in ("yes", "no"):
        raise ValueError(f"expected NAME=yes|no with NAME one of: {', '.join(CAPABILITIES)}")
    return name, state == "yes"


def _fixture_model(value: str) -> str:
    from pytest_vllm.fixture_models import CHAT_MODELS

    if value not in CHAT_MODELS:
        raise ValueError(f"valid fixture chat models: {', '.join(CHAT_MODELS)}")
    return value


def _baseline(value: str) -> str:
    from pytest_vllm import gate

    gate.load(value)  # a ValueError that says why it is not a results file
    return value


def _switch(value: str) -> bool:
    if value.lower() not in ("1", "yes", "true", "on", "0", "no", "false", "off"):
        raise ValueError("expected yes or no")
    return value.lower() in ("1", "yes", "true", "on")


def _fuzz(value: str) -> str:
    if value not in FUZZ_MODES:
        raise ValueError(
            "expected replay (a fixed seed plus the examples found before), seed (the fixed seed "
            "only) or explore (new random examples, saved for later replays)"
        )
    return value


@dataclass(frozen=True)
class Option:
    """One `--vllm-NAME` option with its `vllm_NAME` ini key and `PYTEST_VLLM_NAME` env var."""

    name: str
    help: str
    metavar: str
    parse: Callable[[str], Any] = str
    repeatable: bool = False
    secret: bool = False
    switch: bool = False  # a flag without a value on the command line (env and ini: yes or no)

    @property
    def flag(self) -> str:
        return "--vllm-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "vllm_" + self.name

    @property
    def env(self) -> str:
        return "PYTEST_VLLM_" + self.name.upper()


OPTIONS = (
    Option("url", "Base URL of a running vLLM server to test (default: launch one).", "URL", _url),
    Option("api_key", "API key the server expects (never printed).", "KEY", secret=True),
    Option(
        "model",
        "With --vllm-url: the served model to test (default: the first /v1/models lists). "
        "Otherwise: the model to launch, a hub id or a local directory, as `vllm serve MODEL` "
        "takes it (default: the embedded tiny fixture models).",
        "MODEL",
    ),
    Option(
        "fixture_model",
        "Without --vllm-url and --vllm-model: the chat model the embedded default serves, tiny-chat "
        "(default: trained to answer, write JSON and call tools) or tiny-random (untrained, another tokenizer).",
        "NAME",
        _fixture_model,
    ),
    Option("launcher", f"How to launch a server: {' or '.join(LAUNCHERS)}.", "NAME", _launcher),
    Option(
        "command",
        "Command that starts vLLM, e.g. 'vllm serve' or "
        "'python -m vllm.entrypoints.openai.api_server' (default: whichever is installed).",
        "CMD",
    ),
    Option("serve_arg", "Extra argument for the launched server (repeatable).", "ARG", repeatable=True),
    Option("startup_timeout", "Seconds to wait for a launched server to be ready.", "S", _positive),
    Option("request_timeout", "Seconds before any single request gives up.", "S", _positive),
    Option(
        "capability",
        "Override a detected capability, NAME=yes|no (repeatable).",
        "NAME=yes|no",
        _capability,
        repeatable=True,
    ),
    Option("report", "Write one JSON record per check to this file.", "PATH"),
    Option(
        "report_md", "Write the report in Markdown to this file (a pull request's comment, a step summary).", "PATH"
    ),
    Option("report_html", "Write the report as one standalone HTML page to this file (filters, no network).", "PATH"),
    Option(
        "baseline",
        "Gate the run on an earlier results file: exit 0 unless a check regressed or is missing.",
        "PATH",
        _baseline,
    ),
    Option(
        "fuzz",
        "How the fuzz checks draw examples: replay (default: a fixed seed plus the failing examples "
        "found before), seed (the fixed seed only) or explore (new examples, saved for replays).",
        "MODE",
        _fuzz,
    ),
    Option(
        "fuzz_examples",
        "Examples each fuzz check draws (default: its own small number; raise it to search deeper, "
        "e.g. with --vllm-fuzz explore).",
        "N",
        _count,
    ),
    Option(
        "prove",
        "Run each passed check again through the faults that should break it (a proxy in front of its "
        "server) and record whether one did: proved, unproved or inconclusive.",
        "",
        _switch,
        switch=True,
    ),
)


@dataclass
class Settings:
    """The resolved option values, with their defaults, and where each one came from."""

    url: str | None = None
    api_key: str | None = None
    model: str | None = None
    fixture_model: str = "tiny-chat"
    launcher: str = "subprocess"
    command: str | None = None
    serve_arg: tuple[str, ...] = ()
    startup_timeout: float = 900.0
    request_timeout: float = 120.0
    capability: tuple[tuple[str, bool], ...] = ()
    report: str | None = None
    report_md: str | None = None
    report_html: str | None = None
    baseline: str | None = None
    fuzz: str = "replay"
    fuzz_examples: int | None = None
    prove: bool = False
    sources: dict[str, str] = field(default_factory=dict)
    given: dict[str, Any] = field(default_factory=dict)  # as written, for the header

    def describe(self) -> list[str]:
        """`name = value (source)` lines for the report header, secrets masked."""
        lines = []
        for option in OPTIONS:
            value = getattr(self, option.name)
            if value in (None, (), False):
                continue
            shown = self.given.get(option.name, value)
            if option.repeatable:
                shown = " ".join(shown)
            if option.secret:
                shown = "***"
            lines.append(f"{option.flag}{'' if option.switch else '=' + str(shown)} ({self.sources[option.name]})")
        return lines


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm", "vLLM conformance (pytest-vllm)")
    for option in OPTIONS:
        if option.switch:
            kind: dict[str, Any] = {"action": "store_const", "const": "yes"}
        else:
            kind = {"action": "append" if option.repeatable else "store", "metavar": option.metavar}
        group.addoption(
            option.flag,
            dest="vllm_" + option.name,
            default=None,
            help=f"{option.help} [env {option.env}, ini {option.ini}]",
            **kind,
        )
        ini_type: Literal["args", "string"] = "args" if option.repeatable else "string"
        parser.addini(option.ini, option.help, type=ini_type)


def resolve(config: pytest.Config) -> Settings:
    """Resolve every option once; a bad value is a UsageError naming what is valid."""
    settings = Settings()
    for option in OPTIONS:
        raw, source = _raw(config, option)
        try:
            if option.repeatable:
                value = tuple(option.parse(item) for item in raw or ())
            else:
                value = getattr(settings, option.name) if raw is None else option.parse(raw)
        except ValueError as error:
            raise pytest.UsageError(f"{option.flag} ({source}): {error}") from None
        setattr(settings, option.name, value)
        settings.sources[option.name] = source
        if raw is not None:
            settings.given[option.name] = raw
    return settings


def _raw(config: pytest.Config, option: Option) -> tuple[Any, str]:
    cli = config.getoption("vllm_" + option.name)
    if cli is not None:
        return cli, option.flag
    env = os.environ.get(option.env)
    if env is not None:
        return (shlex.split(env) if option.repeatable else env), f"env {option.env}"
    ini = config.getini(option.ini)
    if ini:
        return ini, f"ini {option.ini}"
    return None, "default"

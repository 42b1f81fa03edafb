"""The plugin's options: declared once, resolved once (CLI > env > ini > default)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from pytest_vllm import perf

# The launchers --vllm-launcher picks from: name -> "module:class", imported only when picked.
LAUNCHERS = {
    "subprocess": "pytest_vllm.launchers:SubprocessLauncher",
    "docker": "pytest_vllm.docker_launcher:DockerLauncher",
}
FUZZ_MODES = ("replay", "seed", "explore")


def cache_root() -> Path:
    """Where pytest-vllm caches what is expensive: `$PYTEST_VLLM_CACHE`, else ~/.cache/pytest-vllm."""
    root = os.environ.get("PYTEST_VLLM_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "pytest-vllm"


LAUNCH = "launch"  # --vllm-url's word for "servers this run launches"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _named(value: str) -> tuple[str, str]:
    """`NAME=VALUE` as (NAME, VALUE); ("", value) without a name."""
    name, sep, rest = value.partition("=")
    return (name, rest) if sep and _NAME.fullmatch(name) else ("", value)


def _url(value: str) -> str:
    name, url = _named(value)
    if url == LAUNCH:
        return value
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL such as http://localhost:8000, or {LAUNCH} (optionally NAME=...)")
    if parts.username or parts.password:
        raise ValueError("put credentials in --vllm-api-key, not in the URL")
    return (f"{name}=" if name else "") + url.rstrip("/").removesuffix("/v1")


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


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= 1:
        raise ValueError("expected a fraction of the GPU's memory, above 0 and at most 1, e.g. 0.3")
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


def _slos(value: str) -> tuple[tuple[str, float], ...]:
    return tuple(perf.parse_goodput(value.replace(",", " ").split()).items())


def _ratio(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 1:
        raise ValueError("expected a ratio above 1, e.g. 1.25 (a metric may be a quarter worse than its baseline)")
    return number


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
    per_target: bool = False  # repeatable on the command line, each value for the targets beside it (one elsewhere)
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
    Option(
        "url",
        "Base URL of a running vLLM server to test (default: launch one); repeat it to test several, "
        f"`{LAUNCH}` for servers this run launches beside them, NAME=URL to name the target.",
        "URL",
        _url,
        per_target=True,
    ),
    Option(
        "api_key",
        "API key the server expects (never printed); repeated, each is the key of the --vllm-url before it.",
        "KEY",
        secret=True,
        per_target=True,
    ),
    Option(
        "model",
        "With --vllm-url: the served model to test (default: the first /v1/models lists). "
        "Otherwise: the model to launch, a hub id or a local directory, as `vllm serve MODEL` "
        "takes it (default: the embedded tiny fixture models). Repeated, each is a target of the --vllm-url "
        "before it.",
        "MODEL",
        per_target=True,
    ),
    Option(
        "fixture_model",
        "Without --vllm-url and --vllm-model: the chat model the embedded default serves, tiny-chat "
        "(default: trained to answer, write JSON and call tools) or tiny-random (untrained, another tokenizer).",
        "NAME",
        _fixture_model,
    ),
    Option(
        "launcher",
        f"How to launch a server: {' or '.join(LAUNCHERS)} (with --vllm-image; default: subprocess).",
        "NAME",
        _launcher,
    ),
    Option(
        "image",
        "With --vllm-launcher docker: the vLLM image to run, e.g. vllm/vllm-openai-cpu:v0.32.0 (pulled if "
        "missing) or one `python -m pytest_vllm.cpu_image` built.",
        "IMAGE",
    ),
    Option(
        "command",
        "Command that starts vLLM, e.g. 'vllm serve' or "
        "'python -m vllm.entrypoints.openai.api_server' (default: whichever is installed).",
        "CMD",
    ),
    Option("serve_arg", "Extra argument for the launched server (repeatable).", "ARG", repeatable=True),
    Option(
        "gpu_share",
        "On a GPU: the fraction of its memory each launched server gets (vLLM's --gpu-memory-utilization; default: "
        "0.9 of the memory free at the run's first launch, split evenly between the servers the run may launch).",
        "FRACTION",
        _fraction,
    ),
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
    Option(
        "perf",
        "Run the performance checks too (suites/test_perf.py: latency and throughput under load, as `vllm bench "
        "serve` measures them); with --vllm-baseline, a metric worse than the baseline's beyond the tolerance fails.",
        "",
        _switch,
        switch=True,
    ),
    Option(
        "perf_slo",
        "The performance checks' goodput SLOs in milliseconds, e.g. 'ttft:500 tpot:50 e2el:5000' (a request is "
        "good when every metric named is within its SLO).",
        "SLOS",
        _slos,
    ),
    Option(
        "perf_tolerance",
        "With --vllm-perf and --vllm-baseline: how much worse than the baseline a metric may be, as a ratio "
        "(e.g. 1.25: a quarter slower; default: from the spread of the baseline's own runs).",
        "RATIO",
        _ratio,
    ),
    Option(
        "parity",
        "Run the parity checks too (suites/test_parity.py: a launched model's greedy tokens and logprobs against "
        "Hugging Face transformers and vLLM's LLM class, run in a child process).",
        "",
        _switch,
        switch=True,
    ),
)


@dataclass(frozen=True)
class Target:
    """One server and model the run tests: at `url`, or launched (`url` None; `model` None: the embedded
    default at launch, the first listed model at a URL)."""

    name: str  # in the id of each check on it when the run has several targets: test_x[NAME-...]
    url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass
class Settings:
    """The resolved option values, with their defaults, and where each one came from."""

    url: str | None = None
    api_key: str | None = None
    model: str | None = None
    fixture_model: str = "tiny-chat"
    launcher: str = "subprocess"
    image: str | None = None
    command: str | None = None
    serve_arg: tuple[str, ...] = ()
    gpu_share: float | None = None
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
    perf: bool = False
    perf_slo: tuple[tuple[str, float], ...] = ()
    perf_tolerance: float | None = None
    parity: bool = False
    targets: tuple[Target, ...] = ()
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
            if option.repeatable or isinstance(shown, list):
                shown = " ".join(shown)
            if option.secret:
                shown = "***"
            lines.append(f"{option.flag}{'' if option.switch else '=' + str(shown)} ({self.sources[option.name]})")
        return lines

    @property
    def launches(self) -> bool:
        """Whether a target is launched by the run (not only tested at a URL)."""
        return any(target.url is None for target in self.targets)

    def of(self, target: Target) -> Settings:
        """These settings as one target of the run sees them."""
        return replace(self, url=target.url, model=target.model, api_key=target.api_key, targets=(target,))


class _InOrder(argparse.Action):
    """`append`, and the option noted in `vllm_order` too: which --vllm-model follows which --vllm-url."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        namespace.vllm_order = [*getattr(namespace, "vllm_order", []), (self.dest.removeprefix("vllm_"), values)]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm", "vLLM conformance (pytest-vllm)")
    for option in OPTIONS:
        if option.switch:
            kind: dict[str, Any] = {"action": "store_const", "const": "yes"}
        elif option.per_target:
            kind = {"action": _InOrder, "metavar": option.metavar}
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
    values: dict[str, list[str]] = {}  # the per-target options' values, parsed
    for option in OPTIONS:
        raw, source = _raw(config, option)
        try:
            if option.repeatable:
                value = tuple(option.parse(item) for item in raw or ())
            elif option.per_target:  # a list from the command line, where it may be repeated
                items = raw if isinstance(raw, list) else [] if raw is None else [raw]
                values[option.name] = [option.parse(item) for item in items]
                value = None
            else:
                value = getattr(settings, option.name) if raw is None else option.parse(raw)
        except ValueError as error:
            raise pytest.UsageError(f"{option.flag} ({source}): {error}") from None
        setattr(settings, option.name, value)
        settings.sources[option.name] = source
        if raw is not None:
            settings.given[option.name] = raw
    order = [name for name, _ in getattr(config.option, "vllm_order", [])]
    settings.targets = _targets(values, settings.sources, order)
    first = settings.targets[0]
    settings.url, settings.model, settings.api_key = first.url, first.model, first.api_key
    if settings.launcher == "docker" and settings.image is None and settings.launches:
        raise pytest.UsageError(
            "--vllm-launcher docker needs --vllm-image IMAGE: vLLM's own (vllm/vllm-openai-cpu, vllm/vllm-openai) "
            "or a CPU image built without a registry by `python -m pytest_vllm.cpu_image`"
        )
    return settings


def _targets(values: dict[str, list[str]], sources: dict[str, str], order: list[str]) -> tuple[Target, ...]:
    """The run's targets from the --vllm-url, --vllm-model and --vllm-api-key values (`order`: the options as the
    command line gave them): each model and key belongs to the URL before it on the command line; with no URL the
    models are launched. A model before the first URL (or not given on the command line) is the first URL's, a
    key there every URL's that has none of its own. A URL without a model tests its first listed model, `launch`
    without one the embedded default."""
    cli = [name for name in values if sources[name].startswith("--")]
    names = [name for name in values if name not in cli for _ in values[name]]  # url first, then model and key
    names.sort(key=lambda name: name != "url")
    names += [name for name in order if name in cli]
    left = {name: list(values[name]) for name in values}
    ahead: dict[str, list[str]] = {"model": [], "api_key": []}  # given before the first URL
    groups: list[dict[str, Any]] = []
    for name in names:
        value = left[name].pop(0)
        if name == "url":
            groups.append({"url": value, "model": [], "api_key": []})
        else:
            (groups[-1] if groups else ahead)[name].append(value)
    groups = groups or [{"url": LAUNCH, "model": [], "api_key": []}]
    groups[0]["model"][:0] = ahead["model"]
    targets = []
    for group in [{"url": "before the first --vllm-url", "api_key": ahead["api_key"]}, *groups]:
        if len(group["api_key"]) > 1:
            raise pytest.UsageError(f"--vllm-api-key: one key per --vllm-url, {group['url']} was given several")
    for group in groups:
        key = next(iter(group["api_key"] or ahead["api_key"]), None)
        name, url = _named(group["url"])
        for model in group["model"] or [None]:
            named, model = _named(model) if model else ("", model)
            where = None if url == LAUNCH else url
            targets.append(
                Target(named or _target_name(name, where, model, len(group["model"]) > 1), where, model, key)
            )
    names = [target.name for target in targets]
    for index, target in enumerate(targets):
        if names.count(target.name) > 1:
            targets[index] = replace(target, name=f"{target.name}-{names[: index + 1].count(target.name)}")
    return tuple(targets)


def _target_name(name: str, url: str | None, model: str | None, several: bool) -> str:
    """A target's name where none is given: the URL's host and port (and the model, for one of several models at
    it), or the launched model's folder name (`embedded` for the embedded default)."""
    if url is None:
        return name or (Path(model).name if model else "embedded")
    parts = urlsplit(url)
    base = name or (f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname))
    return f"{base}/{model}" if several and model else base


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

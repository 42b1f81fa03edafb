"""The progress log and its ticker: what the terminal says while models build and servers start."""

import io
import os
import threading

import pytest

from pytest_vllm import progress


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ticker_prints_new_lines_then_what_is_still_under_way(tmp_path, monkeypatch):
    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)  # the time each line records
    lines: list[str] = []
    clock = Clock(1000.0)
    ticker = progress.Ticker(tmp_path, lines.append, clock=clock)
    ticker.tick()
    assert lines == [], "nothing to say before anything happens"
    with progress.step(tmp_path, "building fixture model tiny-chat", done="built"):
        ticker.tick()
        assert lines == ["vllm: building fixture model tiny-chat"]
        for clock.now in range(1005, 1090, 5):  # a tick every 5 s, for 85 s
            ticker.tick()
        assert lines[1:] == [
            "vllm: still building fixture model tiny-chat (30 s)",
            "vllm: still building fixture model tiny-chat (60 s)",
        ], "without a TTY, at most one line every 30 s"
    ticker.tick()
    assert lines[3].startswith("vllm: building fixture model tiny-chat: built in ")
    ticker.tick()
    assert len(lines) == 4, "a finished step is not mentioned again"


def test_on_a_tty_the_status_says_what_is_still_under_way_at_every_tick(tmp_path, monkeypatch):
    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    lines: list[str] = []
    status: list[str] = []
    clock = Clock(1000.0)
    ticker = progress.Ticker(tmp_path, lines.append, status.append, clock=clock)
    with progress.step(tmp_path, "starting vLLM for tiny-chat", done="ready"):
        ticker.tick()
        with progress.step(tmp_path, "starting vLLM for tiny-vision", done="ready"):
            for clock.now in (1005, 1010):
                ticker.tick()
    ticker.tick()
    assert lines[:2] == ["vllm: starting vLLM for tiny-chat", "vllm: starting vLLM for tiny-vision"]
    assert lines[2].startswith("vllm: starting vLLM for tiny-vision: ready in ")
    assert lines[3].startswith("vllm: starting vLLM for tiny-chat: ready in ")
    assert status == [
        "",
        "vllm: still starting vLLM for tiny-chat (5 s)",  # the step that began at this tick is news, not "still"
        "vllm: still starting vLLM for tiny-chat (10 s), starting vLLM for tiny-vision (10 s)",
        "",  # nothing under way: the status is erased
    ]


def test_a_failed_step_says_so_and_the_error_goes_on(tmp_path):
    lines: list[str] = []
    with pytest.raises(RuntimeError), progress.step(tmp_path, "starting vLLM for tiny-chat", done="ready"):
        raise RuntimeError("boom")
    progress.Ticker(tmp_path, lines.append).tick()
    assert lines[0] == "vllm: starting vLLM for tiny-chat"
    assert lines[1].startswith("vllm: starting vLLM for tiny-chat: failed after ")


def test_reports_from_several_processes_interleave_and_a_torn_line_waits(tmp_path):
    lines: list[str] = []
    ticker = progress.Ticker(tmp_path, lines.append)
    progress.report(tmp_path, "one")
    with open(tmp_path / progress.LOG_NAME, "a") as log:
        log.write('{"time": 1, "message": "tw')  # another process is writing this line
    ticker.tick()
    assert lines == ["vllm: one"]
    with open(tmp_path / progress.LOG_NAME, "a") as log:
        log.write('o"}\n')
    ticker.tick()
    assert lines == ["vllm: one", "vllm: two"]


def test_the_thread_ticks_every_interval_and_stop_prints_the_rest(tmp_path):
    lines: list[str] = []
    ticked = threading.Event()
    ticker = progress.Ticker(tmp_path, lambda line: (lines.append(line), ticked.set()), interval=0.01)
    with progress.step(tmp_path, "starting vLLM for tiny-chat", done="ready"):
        ticker.start()
        assert ticked.wait(5)
    ticker.stop()
    assert lines[0] == "vllm: starting vLLM for tiny-chat"
    assert lines[-1].startswith("vllm: starting vLLM for tiny-chat: ready in ")


def test_console_writes_where_stdout_was_when_it_was_made(tmp_path, monkeypatch):
    with open(tmp_path / "terminal", "w") as terminal, open(tmp_path / "captured", "w") as captured:
        monkeypatch.setattr("sys.stdout", terminal)
        console = progress.Console.of_stdout(column=lambda: 0)
        os.dup2(captured.fileno(), terminal.fileno())  # what pytest's fd capture does to fd 1
        console.line("vllm: starting vLLM for tiny-chat")
    assert (tmp_path / "terminal").read_text() == "vllm: starting vLLM for tiny-chat\n"
    assert (tmp_path / "captured").read_text() == ""
    assert not console.tty


def test_no_console_where_stdout_has_no_file_descriptor(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert progress.Console.of_stdout(column=lambda: 0) is None


class Screen:
    """pytest's terminal writer and the console writing to one screen."""

    def __init__(self) -> None:
        self.text = ""
        self.console = progress.Console(self, self.column)
        self.pytest_line = ""  # the line pytest's writer believes it is on

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def column(self) -> int:
        return len(self.pytest_line)

    def pytest_writes(self, text: str) -> None:
        hook = self.console.pytest_runtest_logreport()
        next(hook)  # the console erases its status before pytest writes
        self.write(text)
        self.pytest_line = (self.pytest_line + text).rpartition("\n")[2]
        with pytest.raises(StopIteration):
            hook.send(None)


def test_a_line_never_glues_onto_pytest_s_unfinished_line_of_progress():
    screen = Screen()
    screen.pytest_writes("suites/test_chat.py ..")
    screen.console.line("vllm: starting vLLM for tiny-vision")
    screen.console.line("vllm: starting vLLM for tiny-vision: ready in 40 s")
    screen.pytest_writes("..")
    screen.console.line("vllm: starting vLLM for tiny-embed")
    screen.pytest_writes("   [100%]\n")
    screen.console.line("vllm: starting vLLM for tiny-embed: ready in 20 s")
    assert screen.text.splitlines() == [
        "suites/test_chat.py ..",
        "vllm: starting vLLM for tiny-vision",
        "vllm: starting vLLM for tiny-vision: ready in 40 s",
        "..",
        "vllm: starting vLLM for tiny-embed",
        "   [100%]",
        "vllm: starting vLLM for tiny-embed: ready in 20 s",
    ]


def test_the_status_is_rewritten_in_place_and_erased_before_pytest_writes():
    screen = Screen()
    screen.pytest_writes("suites/test_chat.py .")
    screen.console.status("vllm: still starting vLLM for tiny-vision (5 s)")
    screen.console.status("vllm: still starting vLLM for tiny-vision (10 s)")
    assert screen.text == (
        "suites/test_chat.py .\nvllm: still starting vLLM for tiny-vision (5 s)"
        + "\r"
        + " " * 47
        + "\r"
        + "vllm: still starting vLLM for tiny-vision (10 s)"
    )
    screen.text = ""
    screen.pytest_writes(".")
    assert screen.text == "\r" + " " * 48 + "\r" + ".", "the status is erased, pytest's letter in its place"
    screen.console.line("vllm: starting vLLM for tiny-vision: ready in 12 s")
    assert screen.text.endswith(".\nvllm: starting vLLM for tiny-vision: ready in 12 s\n")


def test_without_a_shared_folder_nothing_is_written(tmp_path):
    progress.report(None, "nowhere")
    with progress.step(None, "nothing"):
        pass
    assert list(tmp_path.iterdir()) == []

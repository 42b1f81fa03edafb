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
        clock.now = 1035.0
        ticker.tick()
        clock.now = 1040.0
        ticker.tick()
        assert lines[1:] == [
            "vllm: still building fixture model tiny-chat (35 s)",
            "vllm: still building fixture model tiny-chat (40 s)",
        ]
    ticker.tick()
    assert lines[3].startswith("vllm: building fixture model tiny-chat: built in ")
    ticker.tick()
    assert len(lines) == 4, "a finished step is not mentioned again"


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
        write = progress.console(fallback=None)
        os.dup2(captured.fileno(), terminal.fileno())  # what pytest's fd capture does to fd 1
        write("vllm: still starting vLLM for tiny-chat (5 s)")
    assert (tmp_path / "terminal").read_text() == "vllm: still starting vLLM for tiny-chat (5 s)\n"
    assert (tmp_path / "captured").read_text() == ""


def test_console_falls_back_where_stdout_has_no_file_descriptor(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert progress.console(fallback=print) is print


def test_without_a_shared_folder_nothing_is_written(tmp_path):
    progress.report(None, "nowhere")
    with progress.step(None, "nothing"):
        pass
    assert list(tmp_path.iterdir()) == []

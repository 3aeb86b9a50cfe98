"""Every command block of docs/auditors-guide.md runs as written, against the demo district, on
each store: on PostgreSQL the guide's `demo.db` is the test's database URL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import store_env

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "auditors-guide.md"


def test_the_guide_runs_as_written(tmp_path: Path, store: str, store_kind: str) -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 6
    assert all("demo.db" in block for block in blocks[:2])
    if store_kind == "postgres":  # an empty database, never deleted: no --fresh
        blocks = [block.replace(" --fresh", "").replace("demo.db", store) for block in blocks]
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HAZARDLOOP_LOG_LEVEL": "warning",
        "HOME": str(tmp_path),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        **store_env(),
    }
    outputs = []
    for block in blocks:
        ran = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block],
            capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, f"{block}\n---\n{ran.stderr}"
        outputs.append(ran.stdout)
    text = "\n".join(outputs)
    head = re.search(r"^(\d+):([0-9a-f]{64})$", outputs[1], re.M)
    assert head is not None
    assert "exit status 0" in outputs[2]
    assert head.group(0) in outputs[2]
    assert "True " + head.group(0) in text  # the dossier's proof holds, at the same head
    assert (tmp_path / "dossier-D01-2026-00003.html").stat().st_size > 2000
    assert json.loads((tmp_path / "then.json").read_text())["chain_head"] == head.group(0)

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_smoke_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--smoke", "--no-accuracy", "--out", str(out),
                             "--work", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for heading in ("## 1. Training throughput", "## 2. Inference", "## 3. Cold start", "## 4. HTTP", "## 5. Roofline",
                    "Pipeline overhead:", "int8 vs fp32", "serve path costs", "faster (targets"):
        assert heading in text, heading
    assert "27.8 MFLOP" in text  # the model's forward FLOPs, computed from its config
    assert "nan" not in text.lower()


def test_a_diverged_accuracy_run_is_a_row_not_a_crash() -> None:
    from benchmarks.bench import accuracy_row

    assert accuracy_row("fp32", 0.988, 88.4) == "| fp32 | 98.80% | 88 s |"
    assert accuracy_row("bf16", None, 55.0) == "| bf16 | none: the run diverged or stopped | 55 s |"

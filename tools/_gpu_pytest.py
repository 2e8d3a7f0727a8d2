"""The `gpu_tests` item of tools/gpu_check.py: the repository's `gpu`-marked tests in a pytest process, each test's
outcome read from its JUnit XML (or, when pytest is stopped at the time limit, from its verbose lines)."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERBOSE_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", re.MULTILINE)


def gpu_test_files(tests: Path = ROOT / "tests") -> list[Path]:
    """The test files that mark tests `gpu` (collecting only these keeps the run short)."""
    return sorted(path for path in tests.glob("test_*.py") if "mark.gpu" in path.read_text(encoding="utf-8"))


def junit_name(node_id: str) -> str:
    """A pytest node id (`tests/test_x.py::Case::test_y[a]`) as JUnit XML names the test
    (`tests.test_x.Case::test_y[a]`)."""
    path, *scopes, test = node_id.split("::")
    return ".".join([path.removesuffix(".py").replace("/", "."), *scopes]) + f"::{test}"


def verbose_outcomes(output: str) -> dict[str, str]:
    """Each test's outcome from pytest's verbose lines (`tests/test_x.py::test_y PASSED [ 10%]`), named as in JUnit
    XML: what a run stopped before its report still says."""
    return {junit_name(node_id): outcome.lower() for node_id, outcome in VERBOSE_LINE.findall(output)}


def junit_outcomes(xml: Path) -> dict[str, str]:
    """Each test's outcome from pytest's JUnit XML: `passed`, `skipped: why`, `failed: first line`, `error: …`."""
    outcomes = {}
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcomes[name] = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                message = (found.get("message") or found.text or "").strip().splitlines()
                label = {"failure": "failed", "error": "error"}.get(kind, kind)
                outcomes[name] = f"{label}: {message[0] if message else '(no message)'}"
                break
    return outcomes


def run_gpu_tests(seconds: float, xml: Path) -> tuple[str, dict[str, str]]:
    """Run the `gpu` tests for at most `seconds`: a one-line summary and each test's outcome; raises
    `RuntimeError` when pytest could not run them at all (a conftest that fails to import)."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "-rA",
               "--continue-on-collection-errors", f"--junitxml={xml}", *map(str, gpu_test_files())]
    try:
        finished = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=seconds)
    except subprocess.TimeoutExpired as stopped:
        output = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else stopped.stdout or ""
        sys.stdout.write(output)
        outcomes = verbose_outcomes(output)
        return f"stopped at the time budget ({seconds:.0f} s) after {len(outcomes)} tests", outcomes
    sys.stdout.write(finished.stdout)
    if not xml.exists():
        last = finished.stdout.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"pytest wrote no report (exit {finished.returncode}): {last[0]}")
    outcomes = junit_outcomes(xml)
    counts = {kind: sum(outcome.startswith(kind) for outcome in outcomes.values())
              for kind in ("passed", "failed", "error", "skipped")}
    return ", ".join(f"{count} {kind}" for kind, count in counts.items()) + f" (pytest exit {finished.returncode})", \
        outcomes

"""Type-check seg-video with mypy, laid out as it is installed.

The package `seg_video` is built from three folders (pyproject.toml's package-dir: `pipeline/` → `seg_video`,
`engines/` → `seg_video.engines`, `configs/` → `seg_video.configs`). An editable install finds them through an
import hook, which mypy cannot follow, so this tool links every source file into `.typecheck/seg_video/…` (the
installed layout), runs mypy on that tree and on `tools/`, and reports the errors under the repository's own paths.

    python tools/typecheck.py                 # the whole package and the tools
    python tools/typecheck.py engines/runners/trt.py tools/build_engine.py   # some files (in the package's context)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".typecheck"
FOLDERS = {"pipeline": Path("seg_video"), "engines": Path("seg_video/engines"), "configs": Path("seg_video/configs")}
"""Each source folder and where the installed package has it."""


def link_tree(tree: Path = TREE) -> Path:
    """(Re)build `tree` as the installed layout of links to the source files; returns the package folder."""
    shutil.rmtree(tree, ignore_errors=True)
    for folder, installed in FOLDERS.items():
        for source in (ROOT / folder).rglob("*.py"):
            link = tree / installed / source.relative_to(ROOT / folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    (tree / "seg_video" / "py.typed").touch()
    return tree / "seg_video"


def installed_path(source: Path, tree: Path = TREE) -> Path:
    """Where a repository file lies in the link tree (files outside the package stay where they are)."""
    relative = source.resolve().relative_to(ROOT)
    for folder, installed in sorted(FOLDERS.items(), key=lambda item: -len(item[1].parts)):
        if relative.parts[0] == folder:
            return tree / installed / Path(*relative.parts[1:])
    return source


def repository_paths(report: str, tree: Path = TREE) -> str:
    """mypy's report with link-tree paths turned back into the repository's."""
    prefix = os.path.relpath(tree, Path.cwd())
    for folder, installed in sorted(FOLDERS.items(), key=lambda item: -len(item[1].parts)):
        report = report.replace(f"{prefix}/{installed}/", f"{folder}/").replace(f"{tree}/{installed}/", f"{folder}/")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run mypy (the project's settings in pyproject.toml) over the link tree; exit with mypy's status."""
    files = list(sys.argv[1:] if argv is None else argv)
    package = link_tree()
    targets = [str(installed_path(Path(f))) for f in files] or [str(package), str(ROOT / "tools")]
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *targets],
                            capture_output=True, text=True,
                            env={**os.environ, "MYPYPATH": os.pathsep.join(filter(None, [
                                str(TREE), os.environ.get("MYPYPATH", "")]))})
    sys.stdout.write(repository_paths(result.stdout))
    sys.stderr.write(repository_paths(result.stderr))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

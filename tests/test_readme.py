"""The README's set-up commands stay true: CI runs exactly its test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(markdown: str) -> list[str]:
    """The contents of the ```bash blocks, in order."""
    return [block.split("```", 1)[0].strip() for block in markdown.split("```bash\n")[1:]]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    quick_start = bash_blocks((ROOT / "README.md").read_text())
    test_command = quick_start[1]
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd ", "export ", "apt-get ", "bash ../shared/tools/"))]
    assert ci_lines == [test_command]
    assert "pytest" in test_command


def test_readme_main_command_uses_options_the_cli_has() -> None:
    from seg_video.cli.options import build_parser

    main_command = bash_blocks((ROOT / "README.md").read_text())[0]
    options = {a for action in build_parser()._actions for a in action.option_strings}
    used = {word for word in main_command.split() if word.startswith("--")}
    assert used <= options

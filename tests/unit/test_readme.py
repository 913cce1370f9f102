"""The README's config reference is generated from the config dataclasses: keep it in sync."""

from __future__ import annotations

from pathlib import Path

from tunewise.config import config_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"
    assert start in text and end in text
    current = text.split(start, 1)[1].split(end, 1)[0]
    assert current == config_reference(), "regenerate the README table with `tunewise config --reference`"


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    text = README.read_text(encoding="utf-8")
    demo = 'pip install torch==2.13.0 -e ".[demo]" && tunewise demo'
    tests = 'pip install torch==2.13.0 -e ".[demo,test]" && python -m pytest'
    assert demo in text and tests in text
    assert tests in (README.parent / ".ci" / "run").read_text(encoding="utf-8")

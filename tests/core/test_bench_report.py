"""The README's benchmark blocks are exactly what ``bench.report`` writes from the committed result files."""

import json

import pytest

from bench import report


@pytest.mark.parametrize("name", sorted(report.SUMMARIES))
def test_readme_block_matches_the_results_file(name):
    text = report.README.read_text(encoding="utf-8")
    result = json.loads((report.RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    assert report.replace_block(text, name, report.SUMMARIES[name](result)) == text, (
        f"README's {name} block differs from bench/results/{name}.json: run python -m bench.report")


def test_replace_block_keeps_the_rest_and_needs_its_markers():
    text = "intro\n<!-- bench:x -->\nold\n<!-- /bench:x -->\nafter\n"
    assert report.replace_block(text, "x", "new\n") == "intro\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\nafter\n"
    with pytest.raises(SystemExit, match="bench:y"):
        report.replace_block(text, "y", "new")

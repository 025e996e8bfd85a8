"""Runs documentation as tests: the doctest examples of a docstring, and README's code blocks."""
from __future__ import annotations

import doctest
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_docstring_examples(module, qualname: str) -> int:
    """Runs the ``>>>`` examples of ``module.qualname``'s docstring; fails with doctest's report
    on the first mismatch. Returns how many examples ran (a docstring without any fails)."""
    tests = [t for t in doctest.DocTestFinder().find(module) if t.name == f"{module.__name__}.{qualname}"]
    assert tests and tests[0].examples, f"{module.__name__}.{qualname} has no docstring examples"
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(tests[0], out=report.append)
    assert result.failed == 0, "".join(report)
    return result.attempted


def readme_python_block(heading: str, index: int = 0, readme: str = "README.md") -> str:
    """The ``index``-th ```python block under the Markdown heading ``heading`` (up to the next
    heading of any level)."""
    text = (ROOT / readme).read_text()
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match, f"{readme} has no heading {heading!r}"
    blocks = re.findall(r"```python\n(.*?)```", match.group(1), re.S)
    assert len(blocks) > index, f"{readme}, {heading!r}: no python block #{index}"
    return blocks[index]

"""The README's Python examples run as written: every ```python block, in order, in one
namespace (a later block may use what an earlier one defined)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of a Markdown ``text``, in order."""
    return PYTHON_BLOCK.findall(text)


def test_python_block_extraction_finds_only_python_blocks():
    text = (
        "intro\n```bash\nmake test\n```\n```python\nx = 1\n```\ntext\n```python\ny = x + 1\n```\n"
    )
    assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]


def test_readme_python_examples_run_in_order_in_one_namespace(capsys):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python example"
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"README.md (python block {number})", "exec")
        exec(code, namespace)
    capsys.readouterr()  # the examples may print; keep the test output clean

"""The README tells the truth about what the code writes: the demo summary it quotes is the file the demo wrote."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quotes_the_demo_summary_the_demo_wrote():
    quote = re.search(r"<!-- demo_summary -->\n```text\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert quote, "README lost its <!-- demo_summary --> quote"
    assert quote.group(1) == (ROOT / "results" / "demo_summary.txt").read_text(encoding="utf-8"), \
        "results/demo_summary.txt changed (a new `make demo`): quote it in the README"

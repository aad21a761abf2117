"""The README's commands stay true: CI runs exactly the README's test command."""
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r'```bash\n(.*?)\n```', (ROOT / 'README.md').read_text(), re.S)
    test_command = [b for b in blocks if 'pytest' in b]
    assert len(test_command) == 1
    assert test_command[0] in (ROOT / '.ci' / 'run').read_text().splitlines()

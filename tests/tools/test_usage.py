"""tools/usage.py: docs/usage.md shows every command line's --help as the code prints it."""
import importlib.util
import os

from conftest import ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location('usage_tool', os.path.join(ROOT, 'tools', 'usage.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_usage_shows_every_commands_help_as_the_code_prints_it():
    usage = load_tool()
    with open(usage.USAGE) as f:
        text = f.read()
    for command in usage.COMMANDS:
        help_text = usage.help_text(command)
        assert help_text.startswith(f'usage: {command} ')
        assert f'<!-- help: {command} -->\n```text\n{help_text}```\n<!-- end help -->' in text, \
            f'docs/usage.md is out of date for {command}: run python tools/usage.py'


def test_a_changed_help_text_is_found(tmp_path, monkeypatch):
    usage = load_tool()
    stale = tmp_path / 'usage.md'
    with open(usage.USAGE) as f:
        stale.write_text(f.read().replace('--max_steps', '--most_steps', 1))
    monkeypatch.setattr(usage, 'USAGE', str(stale))
    assert usage.main(['--check']) == 1
    assert usage.main([]) == 0 and usage.main(['--check']) == 0

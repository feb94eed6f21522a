"""tools/usage.py: docs/usage.md shows every command line's --help as the code prints it."""
import importlib.util
import os
import re

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


def flag_helps(help_text):
    """{'--flag': its line and the help's continuation lines, joined} of a --help text."""
    helps, flag = {}, None
    for line in help_text.splitlines():
        start = re.match(r' {2}(-{1,2}[\w-]+)', line)
        if start:
            flag = start.group(1)
            helps[flag] = line
        elif flag and line.startswith(' ' * 3):
            helps[flag] += ' ' + line.strip()
        else:
            flag = None
    return helps


def test_every_see_in_a_help_names_a_file_of_the_repository_that_tells_of_the_flag():
    usage = load_tool()
    found, wrong = 0, []
    for command in usage.COMMANDS:
        for flag, text in flag_helps(usage.help_text(command)).items():
            for target in re.findall(r'\bsee (README|[\w/.-]+\.md)\b', text):
                found += 1
                path = os.path.join(ROOT, 'README.md' if target == 'README' else target)
                if not (os.path.isfile(path) and flag in open(path).read()):
                    wrong.append(f'{command} {flag}: see {target}')
    assert found and wrong == []


def test_a_changed_help_text_is_found(tmp_path, monkeypatch):
    usage = load_tool()
    stale = tmp_path / 'usage.md'
    with open(usage.USAGE) as f:
        stale.write_text(f.read().replace('--max_steps', '--most_steps', 1))
    monkeypatch.setattr(usage, 'USAGE', str(stale))
    assert usage.main(['--check']) == 1
    assert usage.main([]) == 0 and usage.main(['--check']) == 0

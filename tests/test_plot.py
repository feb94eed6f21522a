"""plot.py: the command line that draws one or several runs' curves."""
import os

import cv2
import pytest

from metrics import curves
import plot
from conftest import run_in_process
from core.cli import UserError
from logfiles import COLUMNS, check_picture, write_run


@pytest.mark.parametrize('content', [None, '', ','.join(COLUMNS) + '\n'])
def test_a_missing_or_empty_log_ends_with_one_line(tmp_path, content):
    if content is not None:
        (tmp_path / 'log.csv').write_text(content)
    with pytest.raises(UserError):
        curves.draw_curves(str(tmp_path))
    r = run_in_process(plot.main, ['--save_path', str(tmp_path)])
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'log.csv' in r.stderr
    assert not os.path.exists(tmp_path / 'curves.png')


def test_several_runs_on_one_chart(tmp_path, monkeypatch):
    write_run(str(tmp_path / 'bn'), 3)
    write_run(str(tmp_path / 'sn'), 2, colorfulness=False)  # a log from before colorfulness was logged
    monkeypatch.chdir(tmp_path)
    r = run_in_process(plot.main, ['--save_path', str(tmp_path / 'bn'), str(tmp_path / 'sn'), '--labels', 'bn', 'sn'])
    assert r.returncode == 0, r.stderr
    check_picture(str(tmp_path / 'curves_bn_sn.png'))
    assert cv2.imread(str(tmp_path / 'curves_bn_sn.png')).shape[:2] == (1600, 1100)


def test_labels_must_match_the_runs(tmp_path):
    write_run(str(tmp_path / 'a'), 1)
    r = run_in_process(plot.main, ['--save_path', str(tmp_path / 'a'), '--labels', 'x', 'y'])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and '--labels' in r.stderr


def test_no_command_line_imports_another():
    """train.py once imported plot.py for its curves; what both need lives in curves.py now."""
    import ast
    from conftest import ROOT
    commands = {'train', 'test', 'plot', 'colorize', 'export', 'bench'}
    for command in sorted(commands):
        with open(os.path.join(ROOT, command + '.py')) as f:
            tree = ast.parse(f.read())
        imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split('.')[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & (commands - {command}), f"{command}.py imports {imported & commands}"

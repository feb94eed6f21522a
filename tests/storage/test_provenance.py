"""provenance.py: the commit and dirtiness of a checkout, the library versions, and None (never an
exception) wherever git or a library cannot tell."""
import os
import platform
import stat
import subprocess
import sys
import time

import pytest

from storage import provenance


def git(folder, *args):
    """Run git in `folder` unaffected by the machine's git configuration (signing, hooks, names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('GIT_')}
    env.update(GIT_CONFIG_NOSYSTEM='1', GIT_CONFIG_GLOBAL=os.devnull, HOME=str(folder))
    return subprocess.run(['git', '-c', 'user.name=Test', '-c', 'user.email=test@example.com',
                           '-c', 'commit.gpgsign=false', '-c', 'init.defaultBranch=main', *args],
                          cwd=folder, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path):
    """A git checkout with one committed file, and its commit."""
    folder = tmp_path / 'checkout'
    folder.mkdir()
    git(folder, 'init', '-q')
    (folder / 'train.py').write_text('print("v1")\n')
    git(folder, 'add', 'train.py')
    git(folder, 'commit', '-q', '-m', 'first')
    return folder, git(folder, 'rev-parse', 'HEAD').strip()


def test_a_clean_checkout_gives_its_commit(checkout):
    folder, commit = checkout
    assert len(commit) == 40
    assert provenance.code_version(folder) == {'commit': commit, 'dirty': False}
    assert provenance.code_version(str(folder / '.')) == {'commit': commit, 'dirty': False}


def test_a_changed_tracked_file_makes_it_dirty(checkout):
    folder, commit = checkout
    (folder / 'train.py').write_text('print("v2")\n')
    assert provenance.code_version(folder) == {'commit': commit, 'dirty': True}


def test_untracked_files_do_not_make_it_dirty(checkout):
    folder, commit = checkout
    (folder / 'outputs.csv').write_text('step,loss\n')
    assert provenance.code_version(folder) == {'commit': commit, 'dirty': False}


def test_a_subfolder_of_a_checkout_gives_the_checkout_commit(checkout):
    folder, commit = checkout
    (folder / 'tests').mkdir()
    assert provenance.code_version(folder / 'tests') == {'commit': commit, 'dirty': False}


def test_a_later_commit_is_seen(checkout):
    folder, first = checkout
    (folder / 'train.py').write_text('print("v2")\n')
    git(folder, 'commit', '-q', '-am', 'second')
    second = git(folder, 'rev-parse', 'HEAD').strip()
    assert second != first
    assert provenance.code_version(folder) == {'commit': second, 'dirty': False}


def test_git_variables_of_the_caller_do_not_redirect_it(checkout, tmp_path, monkeypatch):
    folder, commit = checkout
    monkeypatch.setenv('GIT_DIR', str(tmp_path / 'elsewhere' / '.git'))
    assert provenance.code_version(folder) == {'commit': commit, 'dirty': False}


def test_outside_a_checkout_both_are_none(tmp_path, capfd):
    plain = tmp_path / 'plain'
    plain.mkdir()
    assert provenance.code_version(plain) == {'commit': None, 'dirty': None}
    assert provenance.code_version(tmp_path / 'missing') == {'commit': None, 'dirty': None}
    out, err = capfd.readouterr()
    assert out == '' and err == '', 'git must not print to the terminal'


def test_a_checkout_without_commits_gives_none(tmp_path, capfd):
    git(tmp_path, 'init', '-q')
    assert provenance.code_version(tmp_path) == {'commit': None, 'dirty': None}
    assert capfd.readouterr() == ('', '')


def test_without_git_both_are_none(checkout, tmp_path, monkeypatch):
    folder, _ = checkout
    empty = tmp_path / 'no-programs'
    empty.mkdir()
    monkeypatch.setenv('PATH', str(empty))
    assert provenance.code_version(folder) == {'commit': None, 'dirty': None}


def test_a_git_that_hangs_is_given_up(checkout, tmp_path, monkeypatch):
    folder, _ = checkout
    bin_folder = tmp_path / 'bin'
    bin_folder.mkdir()
    fake = bin_folder / 'git'
    # A child that keeps the output pipe open: the timeout must not wait for it.
    fake.write_text('#!/bin/sh\nsleep 30 &\nsleep 30\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv('PATH', f'{bin_folder}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setattr(provenance, 'GIT_TIMEOUT', 0.3)
    start = time.monotonic()
    assert provenance.code_version(folder) == {'commit': None, 'dirty': None}
    assert time.monotonic() - start < 5


def test_by_default_it_reads_the_checkout_the_code_runs_from():
    here = os.path.dirname(os.path.abspath(provenance.__file__))
    try:
        expected = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True,
                                  text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        expected = None
    version = provenance.code_version()
    assert version['commit'] == expected
    assert version['dirty'] in ((None,) if expected is None else (True, False))


def test_library_versions_match_the_imported_modules():
    import cv2
    import numpy
    import torch
    import torchvision
    assert provenance.library_versions() == {
        'python': platform.python_version(), 'torch': torch.__version__,
        'torchvision': torchvision.__version__, 'numpy': numpy.__version__,
        'opencv': cv2.__version__}


def test_a_library_that_fails_to_import_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, 'cv2', None)  # makes `import cv2` raise ImportError
    versions = provenance.library_versions()
    assert versions['opencv'] is None
    assert versions['numpy'] is not None


def test_provenance_joins_both():
    # Compared by shape: someone may commit in this checkout between two reads of it.
    record = provenance.provenance()
    assert set(record) == {'code', 'versions'}
    assert set(record['code']) == {'commit', 'dirty'}
    assert record['code']['commit'] is None or len(record['code']['commit']) == 40
    assert record['versions'] == provenance.library_versions()

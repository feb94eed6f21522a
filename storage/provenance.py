"""What made a run: the code's version and the versions of the libraries it ran with.

Both are read without ever failing: a run that cannot tell its commit (no git, a copy of the code
outside any checkout, a git that hangs) still trains, and records None where it could not tell.
"""
import importlib
import os
import platform
import re
import signal
import subprocess

GIT_TIMEOUT = 5  # seconds; a git stuck on a network filesystem or a lock must not delay a run
# 40 hex digits for SHA-1 repositories, 64 for the SHA-256 object format.
COMMIT = re.compile(r'[0-9a-f]{40}([0-9a-f]{24})?')
LIBRARIES = (('torch', 'torch'), ('torchvision', 'torchvision'), ('numpy', 'numpy'),
             ('opencv', 'cv2'))  # (name in the record, module to import)


def _git(folder, *args):
    """git's stdout for `args` run in `folder`, or None when git fails, is missing or hangs."""
    # The folder alone must decide which checkout is read: variables a git hook or a caller's
    # shell may have set would point git at some other repository.
    env = {k: v for k, v in os.environ.items()
           if k not in ('GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY')}
    env['LC_ALL'] = 'C'
    try:
        # --no-optional-locks: `status` would otherwise refresh the index and take its lock,
        # which can make a git command someone runs in the same checkout at that moment fail.
        git = subprocess.Popen(['git', '--no-optional-locks', '-C', folder, *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    except (OSError, ValueError):
        return None
    try:
        out, _ = git.communicate(timeout=GIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        # The whole process group goes: a helper git started would otherwise keep the pipe open,
        # and the read that collects git's end would wait for the helper, past the timeout.
        try:
            os.killpg(git.pid, signal.SIGKILL)
        except (AttributeError, OSError):
            git.kill()
        git.communicate()
        return None
    return out.decode('utf-8', 'replace') if git.returncode == 0 else None


def code_version(folder=None):
    """{'commit': the checked-out commit (hex str), 'dirty': whether tracked files differ from it};
    both None when `folder` (default: the repository's folder) is not in a git checkout, git is
    missing, or anything else goes wrong."""
    unknown = {'commit': None, 'dirty': None}
    try:
        folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) if folder is None else os.fspath(folder)
        head = _git(folder, 'rev-parse', '--verify', '--quiet', 'HEAD')
        commit = head.strip() if head is not None else ''
        if not COMMIT.fullmatch(commit):
            return unknown
        # Untracked files are left out: scratch outputs and data in the folder are not the code.
        status = _git(folder, 'status', '--porcelain', '--untracked-files=no')
        if status is None:
            return unknown
        return {'commit': commit, 'dirty': bool(status.strip())}
    except Exception:
        return unknown


def library_versions():
    """{'python', 'torch', 'torchvision', 'numpy', 'opencv'}: version strings, None for a library
    that fails to import."""
    versions = {'python': platform.python_version()}
    for name, module in LIBRARIES:
        try:
            versions[name] = str(importlib.import_module(module).__version__)
        except Exception:
            versions[name] = None
    return versions


def provenance():
    """{'code': code_version(), 'versions': library_versions()}."""
    return {'code': code_version(), 'versions': library_versions()}

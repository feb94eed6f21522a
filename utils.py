"""Files written so that a crash never leaves a torn one: atomic writes, JSON records, CSV log rows;
and UserError, the one-line error every layer raises.

The floor of the base layer: imports nothing of the project, so that core/ can import it.
"""
import contextlib
import csv
import json
import os
import tempfile


class UserError(Exception):
    """A problem with the user's input: reported in one line, never as a traceback."""


def atomic_write(path, write_fn, mode='wb'):
    """Write through a temporary file in the same folder, fsync, then rename over `path`, so a
    crash at any moment leaves either the old file or the new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_torn_writes(folder, prefix):
    """Delete the temporary files that atomic_write leaves when a process dies mid-write."""
    for name in os.listdir(folder):
        if name.startswith('.' + prefix) and name.endswith('.tmp'):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def write_json(path, data):
    atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True), mode='w')


def append_csv_row(path, row):
    """Append the dict `row` to the CSV file `path`, under the file's own header if it has one
    (a log begun by an older version keeps its columns; values for others are dropped)."""
    try:
        with open(path, newline='') as f:
            header = next(csv.reader(f), None)
    except FileNotFoundError:
        header = None
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header or list(row), extrasaction='ignore')
        if not header:
            writer.writeheader()
        writer.writerow(row)


def check_writable_folder(path, flag):
    """Create `path` if needed and prove a file can be written there, before any long work."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.write-test-'):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path} cannot be written ({e.strerror or e}); pick a folder you can write to")

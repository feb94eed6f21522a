import os

import pytest

import utils


def test_a_failed_atomic_write_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    path = str(tmp_path / 'ck.pt')
    utils.atomic_write(path, lambda f: f.write(b'the previous file'))
    assert open(path, 'rb').read() == b'the previous file' and os.listdir(tmp_path) == ['ck.pt']

    def explode(f):
        f.write(b'partial')
        raise OSError(28, 'No space left on device')
    before = open(path, 'rb').read()
    with pytest.raises(OSError):
        utils.atomic_write(path, explode)
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['ck.pt']

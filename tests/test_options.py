"""train.py's flags (options.py): a bad one ends the command line with one line naming it."""
import pytest

import train
from conftest import run_in_process


@pytest.mark.parametrize('flags, words', [
    (['--l1_weight', '1.5'], '--l1_weight'),
    (['--smoothing', '0'], '--smoothing'),
    (['--batch_size', '0'], '--batch_size'),
    (['--disc_norm', 'layer'], '--disc_norm'),
    (['--gen_dropout', '1'], '--gen_dropout'),
    (['--base_lr_gen', '-1'], '--base_lr_gen'),
    (['--start_epoch', '5', '--max_epoch', '3'], '--max_epoch'),
])
def test_a_bad_flag_ends_with_one_line(flags, words, tmp_path):
    r = run_in_process(train.main, ['--save_path', str(tmp_path / 'ck'), *flags])
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr

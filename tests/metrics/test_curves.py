"""curves.py: reading train.py's logs, and the chart of one or several runs."""
import os

import cv2
import pytest

from logfiles import COLOUR_COLUMNS, check_picture, colour_values, write_log, write_run
from metrics import curves


@pytest.mark.parametrize('epochs', [3, 1])
def test_draws_the_curves_of_a_log(tmp_path, epochs):
    write_log(str(tmp_path), epochs)
    path = curves.draw_curves(str(tmp_path))
    assert path == os.path.join(str(tmp_path), 'curves.png')
    check_picture(path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_repeated_and_torn_rows_are_tolerated(tmp_path):
    write_log(str(tmp_path), 3)
    with open(tmp_path / 'log.csv', 'a') as f:
        f.write('2,30,train,1.1,0.15,0.16,1.0,0.7,0.5,0.7,80,3.5,0,3e-4,6e-5\n')  # epoch 2 again (a resumed run)
        f.write('3,40,val,1.2,0.1')  # torn by a crash
    log = curves.read_log(str(tmp_path / 'log.csv'))
    assert sorted(log['train']) == [0, 1, 2] and sorted(log['val']) == [0, 1, 2]
    assert log['train'][2]['g_l1'] == 0.15
    check_picture(curves.draw_curves(str(tmp_path)))




def test_reads_every_colour_score_of_the_validation_rows(tmp_path):
    write_run(str(tmp_path / 'bn'), 3)
    write_run(str(tmp_path / 'sn'), 2, colorfulness=False)  # a log from before the colour scores were logged
    steps = curves.read_steps(str(tmp_path / 'bn' / 'steps.csv'))
    assert sorted(steps) == list(range(2, 31, 2)) and steps[4]['g_l1'] == pytest.approx(0.3 / 4)
    log = curves.read_log(str(tmp_path / 'bn' / 'log.csv'))
    for e in range(3):
        assert [log['val'][e][key] for key in COLOUR_COLUMNS] == pytest.approx(colour_values(e))
    assert not set(COLOUR_COLUMNS) & set(log['train'][0])
    assert not set(COLOUR_COLUMNS) & set(curves.read_log(str(tmp_path / 'sn' / 'log.csv'))['val'][0])
    assert set(COLOUR_COLUMNS) == set(curves.EPOCH_COLUMNS)


def test_the_colour_panels_are_drawn(tmp_path):
    """The same runs drawn with and without their colour scores give different pictures: the
    panels of the gap, the semantic accuracy and the classifier FD hold curves."""
    write_run(str(tmp_path / 'with'), 3)
    write_run(str(tmp_path / 'without'), 3, colorfulness=False)
    a = cv2.imread(curves.draw_runs([str(tmp_path / 'with')], ['run'], str(tmp_path / 'a.png')))
    b = cv2.imread(curves.draw_runs([str(tmp_path / 'without')], ['run'], str(tmp_path / 'b.png')))
    assert a.shape == b.shape == (1600, 1100, 3)
    lower = slice(a.shape[0] * 2 // 5, None)  # the epoch panels but the first
    assert (a[lower] != b[lower]).any(axis=2).mean() > 0.005

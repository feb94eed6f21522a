import csv
import os

import cv2
import pytest

import plot
from conftest import run_in_process
from cli import UserError

COLUMNS = ('epoch', 'step', 'phase', 'g_adv', 'g_l1', 'g_loss', 'd_loss', 'd_acc', 'd_acc_real', 'd_acc_fake',
           'images', 'seconds', 'skipped_steps', 'lr_gen', 'lr_disc')
STEP_COLUMNS = ('epoch', 'step', 'g_adv', 'g_l1', 'g_loss', 'd_loss', 'd_acc', 'd_acc_real', 'd_acc_fake', 'images')


def write_log(folder, epochs):
    """A log.csv as train.py writes it: a train row, then a val row, per epoch."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'log.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for epoch in range(epochs):
            for phase, shift in (('train', 0.0), ('val', 0.01)):
                writer.writerow([epoch, 10 * (epoch + 1), phase, 1.0 + 0.1 * epoch, 0.2 - 0.02 * epoch + shift,
                                 0.21 - 0.02 * epoch, 1.2 - 0.05 * epoch, 0.6 + 0.05 * epoch, 0.5, 0.7, 80, 3.5, 0,
                                 3e-4, 6e-5])


def write_run(folder, epochs, steps_per_epoch=10, log_every=2, colorfulness=True):
    """log.csv (with the validation colorfulness) and steps.csv, as train.py writes them."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'log.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + (('colorfulness',) if colorfulness else ()))
        for epoch in range(epochs):
            for phase in ('train', 'val'):
                writer.writerow([epoch, steps_per_epoch * (epoch + 1), phase, 1.0, 0.2 - 0.02 * epoch, 0.21, 1.2,
                                 0.6, 0.5, 0.7, 80, 3.5, 0, 3e-4, 6e-5]
                                + ([20.0 + epoch if phase == 'val' else ''] if colorfulness else []))
    with open(os.path.join(folder, 'steps.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(STEP_COLUMNS)
        for step in range(log_every, epochs * steps_per_epoch + 1, log_every):
            writer.writerow([(step - 1) // steps_per_epoch, step, 1.0, 0.3 / step, 0.31, 1.3, 0.55, 0.5, 0.6, 64])


def check_picture(path):
    picture = cv2.imread(path)
    assert picture is not None, f"{path} is not a readable picture"
    h, w = picture.shape[:2]
    assert 300 <= h <= 3000 and 400 <= w <= 3000
    assert picture.std() > 10  # not blank: axes, lines, text


@pytest.mark.parametrize('epochs', [3, 1])
def test_draws_the_curves_of_a_log(tmp_path, epochs):
    write_log(str(tmp_path), epochs)
    path = plot.draw_curves(str(tmp_path))
    assert path == os.path.join(str(tmp_path), 'curves.png')
    check_picture(path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_repeated_and_torn_rows_are_tolerated(tmp_path):
    write_log(str(tmp_path), 3)
    with open(tmp_path / 'log.csv', 'a') as f:
        f.write('2,30,train,1.1,0.15,0.16,1.0,0.7,0.5,0.7,80,3.5,0,3e-4,6e-5\n')  # epoch 2 again (a resumed run)
        f.write('3,40,val,1.2,0.1')  # torn by a crash
    log = plot.read_log(str(tmp_path / 'log.csv'))
    assert sorted(log['train']) == [0, 1, 2] and sorted(log['val']) == [0, 1, 2]
    assert log['train'][2]['g_l1'] == 0.15
    check_picture(plot.draw_curves(str(tmp_path)))


@pytest.mark.parametrize('content', [None, '', ','.join(COLUMNS) + '\n'])
def test_a_missing_or_empty_log_ends_with_one_line(tmp_path, content):
    if content is not None:
        (tmp_path / 'log.csv').write_text(content)
    with pytest.raises(UserError):
        plot.draw_curves(str(tmp_path))
    r = run_in_process(plot.main, ['--save_path', str(tmp_path)])
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'log.csv' in r.stderr
    assert not os.path.exists(tmp_path / 'curves.png')


def test_several_runs_on_one_chart(tmp_path, monkeypatch):
    write_run(str(tmp_path / 'bn'), 3)
    write_run(str(tmp_path / 'sn'), 2, colorfulness=False)  # a log from before colorfulness was logged
    steps = plot.read_steps(str(tmp_path / 'bn' / 'steps.csv'))
    assert sorted(steps) == list(range(2, 31, 2)) and steps[4]['g_l1'] == pytest.approx(0.3 / 4)
    log = plot.read_log(str(tmp_path / 'bn' / 'log.csv'))
    assert [log['val'][e]['colorfulness'] for e in range(3)] == [20.0, 21.0, 22.0]
    assert 'colorfulness' not in log['train'][0]
    assert 'colorfulness' not in plot.read_log(str(tmp_path / 'sn' / 'log.csv'))['val'][0]
    monkeypatch.chdir(tmp_path)
    r = run_in_process(plot.main, ['--save_path', str(tmp_path / 'bn'), str(tmp_path / 'sn'), '--labels', 'bn', 'sn'])
    assert r.returncode == 0, r.stderr
    check_picture(str(tmp_path / 'curves_bn_sn.png'))
    assert cv2.imread(str(tmp_path / 'curves_bn_sn.png')).shape[:2] == (1000, 1100)


def test_labels_must_match_the_runs(tmp_path):
    write_run(str(tmp_path / 'a'), 1)
    r = run_in_process(plot.main, ['--save_path', str(tmp_path / 'a'), '--labels', 'x', 'y'])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and '--labels' in r.stderr

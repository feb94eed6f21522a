"""Run folders as train.py leaves them (log.csv, steps.csv), written by the tests of the code that reads
them (metrics/curves.py, plot.py), and a check that a chart is a picture."""
import csv
import os

import cv2

COLUMNS = ('epoch', 'step', 'phase', 'g_adv', 'g_l1', 'g_loss', 'd_loss', 'd_acc', 'd_acc_real', 'd_acc_fake',
           'images', 'seconds', 'skipped_steps', 'lr_gen', 'lr_disc')
COLOUR_COLUMNS = ('colorfulness', 'colorfulness_gap', 'semantic_accuracy', 'classifier_fd')
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
    """log.csv (with the validation colour scores) and steps.csv, as train.py writes them."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'log.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + (COLOUR_COLUMNS if colorfulness else ()))
        for epoch in range(epochs):
            for phase in ('train', 'val'):
                writer.writerow([epoch, steps_per_epoch * (epoch + 1), phase, 1.0, 0.2 - 0.02 * epoch, 0.21, 1.2,
                                 0.6, 0.5, 0.7, 80, 3.5, 0, 3e-4, 6e-5]
                                + ([v if phase == 'val' else '' for v in colour_values(epoch)] if colorfulness else []))
    with open(os.path.join(folder, 'steps.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(STEP_COLUMNS)
        for step in range(log_every, epochs * steps_per_epoch + 1, log_every):
            writer.writerow([(step - 1) // steps_per_epoch, step, 1.0, 0.3 / step, 0.31, 1.3, 0.55, 0.5, 0.6, 64])


def colour_values(epoch):
    return [20.0 + epoch, 13.0 - epoch, 0.6 + 0.01 * epoch, 9.0 - epoch]


def check_picture(path):
    picture = cv2.imread(path)
    assert picture is not None, f"{path} is not a readable picture"
    h, w = picture.shape[:2]
    assert 300 <= h <= 3000 and 400 <= w <= 3000
    assert picture.std() > 10  # not blank: axes, lines, text

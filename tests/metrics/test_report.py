"""Scores as a reader sees them (metrics/report.py): the terminal's tables and the results page,
each column a measure of metrics/measures.py (test.py's end-to-end page: tests/test_test.py)."""
import re

import numpy as np

from core import pictures
from metrics.report import BASELINE, TRUTH, format_class_table, format_table, write_results_page

RESULTS = {BASELINE: {'mean_ab_error': 0.0731, 'mae': 12.767, 'psnr': 25.351, 'nazeri_accuracy': 0.265,
                      'colorfulness': 0.003, 'images': 4},
           'g': {'mean_ab_error': 0.06921, 'mae': 11.5, 'psnr': 26.0, 'nazeri_accuracy': 0.3012,
                 'colorfulness': 19.1, 'images': 4},
           TRUTH: {'colorfulness': 33.65, 'images': 4}}


def test_the_printed_table_shows_the_measures_some_row_has_in_their_columns():
    lines = format_table(RESULTS).splitlines()
    assert lines[0] == f"{'':28s} mean|ab err|     MAE PSNR dB Nazeri colorful"  # no dCF, FID, ...: nobody has them
    assert lines[2] == f"{'g':28s}       0.0692  11.500  26.000  30.1%    19.10"
    assert lines[3] == f"{TRUTH:28s}" + ' ' * (13 + 8 + 8 + 7) + '    33.65'  # blank where a row lacks a score


def test_with_many_classes_the_best_and_worst_ten_are_printed():
    per_class = {'A': {f'class{i:02d}': {'mean_ab_error': i / 100, 'colorfulness': 1.0, 'truth_colorfulness': 2.0}
                       for i in range(30)}}
    table = format_class_table(per_class, ['A'])
    shown = re.findall(r'^(class\d\d)', table, re.M)
    assert shown == [f'class{i:02d}' for i in list(range(10)) + list(range(20, 30))]
    assert '10 classes between' in table
    assert 'class05' in table and '0.0500/1.00' in table


def test_the_class_table_writes_each_measure_in_its_format_and_a_dash_where_one_is_missing():
    per_class = {'A': {'cat': {'colorfulness_gap': 3.456, 'semantic_accuracy': 0.5}}}
    table = format_class_table(per_class, ['A'], ('colorfulness_gap', 'semantic_accuracy', 'classifier_fd'))
    assert table.splitlines()[-1].split() == ['cat', '3.46/50.0%/-']


def test_the_results_page_has_every_measures_title_value_meaning_and_the_pictures(tmp_path):
    grid = tmp_path / 'grid_000.png'
    pictures.write_image(str(grid), np.zeros((10, 30, 3), np.uint8))
    pick = tmp_path / 'pick_a.png'
    pictures.write_image(str(pick), np.zeros((6, 8, 3), np.uint8))
    per_class = {label: {'cat': {k: v for k, v in r.items() if k != 'images'}} for label, r in RESULTS.items()}
    path = str(tmp_path / 'index.html')
    write_results_page(path, RESULTS, [str(grid)], 'fp32', False, per_class, {'a <better>': {'picture': 'pick_a.png'}},
                       'CIFAR-10 test images', ['a note'], 'the rule & its ties')
    page = open(path, encoding='utf-8').read()
    assert '<th>mean |ab error|</th>' in page and '<th>Nazeri acc</th>' in page and '<th>FID</th>' not in page
    assert '<td>0.0692</td>' in page and '<td>30.1%</td>' in page and '<td>33.65</td>' in page
    assert '<dt>PSNR dB</dt><dd>peak signal-to-noise ratio of the uint8 RGB images, per image, then averaged; ' \
           'higher is better</dd>' in page
    assert '<tr class=truth><td>ground truth</td>' in page and '<h3>colorfulness</h3>' in page
    assert 'src="grid_000.png" width="60" height="20"' in page  # twice its size
    assert 'columns: original, grayscale, g' in page and 'a &lt;better&gt;' in page
    assert '<p>the rule &amp; its ties</p>' in page and '<p>a note</p>' in page
    assert '4 CIFAR-10 test images; precision fp32' in page

"""tools/choose_decoding.py: a distribution head's temperature chosen on the training images its
run held out, by the stated rule, from test.py's own scores of each setting."""
import json
import os

from conftest import command_line, run_in_process, run_train, train_command
from metrics.decoding import choose


def load_tool():
    return command_line('tools/choose_decoding')


def setting(t, gap, accuracy, fd, error):
    return {'temperature': t, 'blend': None, 'colorfulness_gap': gap, 'semantic_accuracy': accuracy,
            'classifier_fd': fd, 'mean_ab_error': error}


def test_the_table_has_the_results_pages_titles_and_formats_escaped_for_markdown():
    tool = load_tool()
    settings = [dict(setting(0.1, 1.234, 0.8, 2.0, 0.0912), colorfulness=30.111)]
    table, flags = tool.decoding_table('ck.pt', settings, settings[0], 'why', 33.0, 16, ['python', 'x'])
    lines = table.splitlines()
    assert lines[2] == '| temperature | blend | colorfulness | ΔCF | mean \\|ab error\\| | semantic accuracy | classifier FD |'
    assert lines[4] == '| 0.1 **(chosen)** |  | 30.11 | 1.23 | 0.0912 | 80.0% | 2.00 |'
    assert flags == '--temperature 0.1'


def test_each_setting_is_test_pys_score_on_the_held_out_images_and_the_choice_follows_the_rule(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--ab_head', 'classify', '--holdout', '16', '--max_steps', '2',
                                '--val_batches', '1', '--classifier', 'off'))
    assert r.returncode == 0, r.stderr
    data, checkpoint = tiny_cifar, os.path.join(ck, 'checkpoint_ep0.pt')
    tool = load_tool()
    out = str(tmp_path / 'decoding')
    r = run_in_process(tool.main, ['--checkpoint', checkpoint, '--data_path', data, '--temperatures', '0.05', '1',
                                   '--save_path', out, '--device', 'cpu', '--precision', 'fp32'])
    assert r.returncode == 0, r.stderr
    decoding = json.load(open(os.path.join(out, 'decoding.json')))
    assert decoding['images'] == 16 and [s['temperature'] for s in decoding['settings']] == [0.05, 1.0]
    # each row is test.py's own score of that temperature on the held-out split
    for s in decoding['settings']:
        metrics = json.load(open(os.path.join(out, f"T{s['temperature']:g}", 'metrics.json')))
        assert metrics['split'] == 'holdout'
        assert s['colorfulness'] == metrics['checkpoints'][f"T{s['temperature']:g}"]['colorfulness']
    colder, warmer = decoding['settings']
    assert colder['colorfulness'] > warmer['colorfulness']  # a lower temperature, a more saturated mean
    chosen, _ = choose(decoding['settings'], 3.0)
    assert decoding['chosen']['temperature'] == chosen['temperature']
    table = open(os.path.join(out, 'decoding.md')).read()
    assert f"`--temperature {chosen['temperature']:g}`" in table and '**(chosen)**' in table


def test_a_generator_without_a_distribution_head_or_a_holdout_is_refused_in_one_line(tiny_cifar, tmp_path):
    tool = load_tool()
    ck = str(tmp_path / 'ck')
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '1', '--val_batches', '1',
                                   '--classifier', 'off')).returncode == 0
    r = run_in_process(tool.main, ['--checkpoint', os.path.join(ck, 'checkpoint_ep0.pt'), '--data_path', tiny_cifar,
                                   '--save_path', str(tmp_path / 'out')])
    assert r.returncode == 2 and "the reference's regression head" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    ck2 = str(tmp_path / 'ck2')
    assert run_train(train_command(tiny_cifar, ck2, '--ab_head', 'classify', '--max_steps', '1', '--val_batches', '1',
                                   '--classifier', 'off')).returncode == 0
    r = run_in_process(tool.main, ['--checkpoint', os.path.join(ck2, 'checkpoint_ep0.pt'), '--data_path', tiny_cifar,
                                   '--temperatures', '1', '--save_path', str(tmp_path / 'out2')])
    assert r.returncode == 2 and 'train.py --holdout N' in r.stderr

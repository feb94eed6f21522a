"""runlog.py: events read back with TensorBoard's own readers and server, resumed runs that show
each step once, and failures that cost one warning line and never an exception."""
import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import ROOT
from training import runlog

STEPS = list(range(20, 121, 20))
NOTICE = 'training goes on without TensorBoard'


def read(folder):
    """The events of `folder` as TensorBoard's classic reader shows them (orphans purged)."""
    events = EventAccumulator(str(folder), size_guidance={'scalars': 0, 'images': 0, 'tensors': 0})
    events.Reload()
    return events


def steps(folder, tag):
    return [event.step for event in read(folder).Scalars(tag)]


def server_reader_steps(folder, tag):
    """The steps of `tag` as the TensorBoard server's Python reader (--load_fast=false) sees them:
    it keeps the first restart marker of a run, unlike the classic reader."""
    events = plugin_event_accumulator.EventAccumulator(str(folder), size_guidance={'tensors': 0})
    events.Reload()
    return [event.step for event in events.Tensors(tag)]


def next_second():
    """Wait for the clock's next second. Event files are read in name order, and their names
    begin with the second they were made in: a resumed log made in the same second as the one
    before could sort first. Real resumes start seconds after the interrupted run."""
    now = int(time.time())
    while int(time.time()) == now:
        time.sleep(0.01)


def one_warning(capfd, folder, *words):
    out, err = capfd.readouterr()
    assert out == ''
    lines = err.splitlines()
    assert len(lines) == 1, err
    for word in (str(folder), NOTICE, *words):
        assert word in lines[0]
    return lines[0]


def test_scalars_image_and_hparams_read_back(tmp_path, capfd):
    folder = tmp_path / 'tensorboard'
    picture = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    with runlog.TensorBoardLog(folder) as log:
        for step in STEPS:
            log.scalars(step, {'loss_g': step / 10, 'loss_d': -step, 'fid': None}, 'train')
        log.image('samples/val', picture, 120)
        log.hparams({'lr': 2e-4, 'batch_size': 64, 'spectral': True, 'resume': None,
                     'data_path': pathlib.Path('/data'), 'betas': (0.5, 0.999),
                     'count': np.int64(3)}, {'final/fid': 12.5})
    assert capfd.readouterr() == ('', '')

    events = read(folder)
    assert [(e.step, e.value) for e in events.Scalars('train/loss_g')] == \
        [(s, pytest.approx(s / 10)) for s in STEPS]
    assert [e.value for e in events.Scalars('train/loss_d')] == [-s for s in STEPS]
    assert 'train/fid' not in events.Tags()['scalars']

    image, = events.Images('samples/val')
    assert (image.step, image.width, image.height) == (120, 40, 24)
    decoded = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], picture)  # PNG: lossless

    # The hparams are in the run's own folder (no sub-run), with the metric at the last step.
    assert [p.name for p in folder.iterdir() if p.is_dir()] == []
    assert [(e.step, e.value) for e in events.Scalars('final/fid')] == [(120, 12.5)]
    content = events.PluginTagToContent('hparams')
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content['_hparams_/session_start_info']).session_start_info.hparams
    assert start['lr'].number_value == pytest.approx(2e-4)
    assert start['batch_size'].number_value == 64
    assert start['count'].number_value == 3
    assert start['spectral'].string_value == 'True'
    assert start['resume'].string_value == 'None'
    assert start['data_path'].string_value == '/data'
    assert start['betas'].string_value == '(0.5, 0.999)'
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content['_hparams_/experiment']).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ['final/fid']


def test_a_resumed_log_shows_each_step_once(tmp_path):
    folder = tmp_path / 'tensorboard'
    with runlog.TensorBoardLog(folder) as first:
        for step in STEPS + [130]:  # 130: logged after the last checkpoint, at 120
            first.scalars(step, {'loss': step}, 'train')
    next_second()
    with runlog.TensorBoardLog(folder, resume_step=120) as resumed:
        for step in (140, 160, 170):  # 170: again past the next checkpoint, at 160
            resumed.scalars(step, {'loss': step}, 'train')
    next_second()
    with runlog.TensorBoardLog(folder, resume_step=160) as again:
        again.scalars(180, {'loss': 180}, 'train')
    expected = STEPS + [140, 160, 180]

    assert len(list(folder.iterdir())) == 3
    assert steps(folder, 'train/loss') == expected
    assert [e.value for e in read(folder).Scalars('train/loss')] == expected
    assert server_reader_steps(folder, 'train/loss') == expected


def test_a_fresh_log_in_an_old_folder_hides_the_old_steps(tmp_path):
    """A run started over from scratch in the same folder replaces the old curves."""
    folder = tmp_path / 'tensorboard'
    with runlog.TensorBoardLog(folder) as old:
        old.scalars(500, {'loss': 5}, 'train')
    next_second()
    with runlog.TensorBoardLog(folder) as new:
        new.scalars(20, {'loss': 1}, 'train')
    assert steps(folder, 'train/loss') == [20]
    assert server_reader_steps(folder, 'train/loss') == [20]


def test_a_folder_that_cannot_be_made_warns_once_and_never_raises(tmp_path, capfd):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    folder = blocker / 'tensorboard'
    log = runlog.TensorBoardLog(folder, resume_step=10)
    for step in range(50):
        log.scalars(step, {'loss': 1.0}, 'train')
        log.image('samples', np.zeros((4, 4, 3), np.uint8), step)
        log.flush()
    log.hparams({'lr': 1}, {'final/fid': 1.0})
    log.close()
    log.close()
    assert not log.active
    one_warning(capfd, folder)


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
def test_a_disk_that_fills_up_during_the_run_warns_once_without_a_traceback(tmp_path, capfd,
                                                                           monkeypatch):
    # An exception escaping a thread is printed by threading.excepthook (by pytest's own hook
    # under pytest, as a warning): caught here instead, to count.
    escaped = []
    monkeypatch.setattr(threading, 'excepthook', escaped.append)
    folder = tmp_path / 'tensorboard'
    log = runlog.TensorBoardLog(folder)
    log.scalars(1, {'loss': 1.0}, 'train')
    log.flush()
    assert log.active
    # Every later write to the event file now fails as on a full disk (ENOSPC), and does so in
    # SummaryWriter's background thread.
    event_file, = folder.iterdir()
    event_file.unlink()
    event_file.symlink_to('/dev/full')
    for step in range(2, 200):
        log.scalars(step, {'loss': 1.0}, 'train')
    log.flush()
    log.scalars(201, {'loss': 1.0}, 'train')
    log.close()
    assert not log.active
    line = one_warning(capfd, folder, 'No space left on device')
    assert 'Traceback' not in line
    assert escaped == []


def test_missing_tensorboard_warns_once(tmp_path, capfd, monkeypatch):
    # As without the package: torch.utils.tensorboard is imported afresh and its own
    # `import tensorboard` fails.
    monkeypatch.setitem(sys.modules, 'tensorboard', None)
    monkeypatch.delitem(sys.modules, 'torch.utils.tensorboard')
    folder = tmp_path / 'tb'
    log = runlog.TensorBoardLog(folder)
    log.scalars(1, {'loss': 1.0}, 'train')
    log.hparams({}, {})
    log.close()
    line = one_warning(capfd, folder, 'ModuleNotFoundError')
    assert 'tensorboard' in line.replace(str(folder), '')
    assert not folder.exists()


def test_a_bad_picture_turns_the_log_off_with_its_reason(tmp_path, capfd):
    folder = tmp_path / 'tensorboard'
    log = runlog.TensorBoardLog(folder)
    log.image('samples', np.zeros((4, 4), np.float32), 1)
    log.scalars(2, {'loss': 1.0}, 'train')
    log.close()
    one_warning(capfd, folder, 'not (H, W, 3) uint8')


def test_disabled_writes_nothing(tmp_path, capfd):
    folder = tmp_path / 'tensorboard'
    log = runlog.TensorBoardLog(folder, enabled=False, resume_step=5)
    log.scalars(1, {'loss': 1.0}, 'train')
    log.image('samples', np.zeros((4, 4, 3), np.uint8), 1)
    log.hparams({'lr': 1}, {'final/fid': 1.0})
    log.flush()
    log.close()
    assert not log.active
    assert not folder.exists()
    assert capfd.readouterr() == ('', '')


def test_importing_runlog_does_not_import_torch():
    code = 'import sys; from training import runlog; print("torch" in sys.modules)'
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                          cwd=ROOT)
    assert done.stdout.strip() == 'False'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_the_tensorboard_server_lists_the_run_and_its_tags(tmp_path):
    logdir = tmp_path / 'logs'
    with runlog.TensorBoardLog(logdir / 'run1') as log:
        for step in STEPS:
            log.scalars(step, {'loss_g': step / 10}, 'train')
        log.hparams({'lr': 2e-4, 'spectral': True}, {'final/fid': 12.5})
    port = free_port()
    # The server leaves an info file in the temporary folder: this test's own.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    with open(tmp_path / 'server.log', 'wb') as output:
        server = subprocess.Popen(
            [sys.executable, '-m', 'tensorboard.main', '--logdir', str(logdir),
             '--port', str(port), '--host', '127.0.0.1'],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env)
    # Straight to the local server, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f'http://127.0.0.1:{port}/data/plugin/scalars/tags'
    tags = groups = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                with opener.open(url, timeout=2) as answer:
                    tags = json.load(answer)
                if 'final/fid' in tags.get('run1', {}):  # the last event written
                    break
            time.sleep(0.1)
        query = {'experimentName': '', 'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS'],
                 'colParams': [], 'startIndex': 0, 'sliceSize': 10}
        with contextlib.suppress(OSError, ValueError):
            request = urllib.request.Request(
                f'http://127.0.0.1:{port}/data/plugin/hparams/session_groups',
                data=json.dumps(query).encode(), headers={'Content-Type': 'application/json'})
            with opener.open(request, timeout=5) as answer:
                groups = json.load(answer)['sessionGroups']
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    log_text = (tmp_path / 'server.log').read_text(errors='replace')
    assert tags is not None, f'the server never answered:\n{log_text}'
    assert 'run1' in tags, tags
    assert 'train/loss_g' in tags['run1'], tags
    # The HPARAMS tab: one session, the run itself, with its options and metric.
    assert groups is not None, f'the hparams plugin did not answer:\n{log_text}'
    assert [g['name'] for g in groups] == ['run1'], groups
    assert groups[0]['hparams'] == {'lr': pytest.approx(2e-4), 'spectral': 'True'}
    assert [(m['name']['tag'], m['value']) for m in groups[0]['metricValues']] == \
        [('final/fid', 12.5)]

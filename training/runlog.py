"""TensorBoard event files of a training run, written so that logging never stops training.

A failure to log (the tensorboard package missing, a folder that cannot be made, a disk that
fills up hours into a run) prints one warning line, and the log then turns itself off: losing the
curves is better than losing the run.

Resuming. A run resumed from its checkpoint at step T continues at T + 1, while the interrupted
process may have logged steps past T before it stopped. The resumed log starts with a restart
marker at step T + 1 (SummaryWriter's purge_step), and TensorBoard's Python reader
(EventAccumulator, and the server with --load_fast=false) hides every earlier event at that step or
later, so that each step shows once. The server's reader ignores the first such marker of a run,
so a fresh log writes one at step 0: a later resume's marker is then the second and takes effect
(and a run started over in a used folder hides the old run's events). TensorBoard's fast reader,
the data server `tensorboard --logdir` uses by default where it is installed, ignores the markers
and shows the orphaned steps too: `--load_fast=false` hides them there as well.
"""
import numbers
import os
import sys
import tempfile


class TensorBoardLog:
    """The event files of one run in `folder` (e.g. save_path/tensorboard).

    resume_step: the step a resumed run continues from (None for a fresh run); the run should
    then log only steps after it. enabled=False: every method does nothing and no folder is made.
    No method ever raises: the first failure prints a warning to stderr and disables the log.
    """

    def __init__(self, folder, enabled=True, resume_step=None):
        self.folder = folder
        self._writer = None
        self._errors = None
        self._step = 0
        if not enabled:
            return
        try:
            self.folder = os.fspath(folder)
            self._step = 0 if resume_step is None else int(resume_step)
            # Imported here: TensorBoard (and torch with it) costs a second to import, which a
            # run without logging, or a script that only reads this module, need not pay.
            from torch.utils.tensorboard import SummaryWriter
            _check_writable(self.folder)
            purge_step = 0 if resume_step is None else self._step + 1
            self._writer = SummaryWriter(self.folder, purge_step=purge_step)
            self._errors = _keep_writer_thread_errors(self._writer)
        except Exception as e:
            self._fail(e)

    @property
    def active(self):
        """Whether events are still being written (False when disabled, failed or closed)."""
        return self._writer is not None

    def scalars(self, step, values, prefix):
        """Log {name: number} at `step` under the tags f'{prefix}/{name}'; None values are left
        out (a metric not measured at this step)."""
        def write(writer):
            for name, value in values.items():
                if value is not None:
                    tag = f'{prefix}/{name}' if prefix else str(name)
                    writer.add_scalar(tag, float(value), int(step))
        self._write(write, step)

    def image(self, tag, rgb_uint8, step):
        """Log an (H, W, 3) uint8 RGB picture at `step`."""
        def write(writer):
            import numpy as np
            picture = np.asarray(rgb_uint8)
            if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] != 3:
                raise ValueError(f'image {tag!r} is {picture.dtype} {picture.shape}, '
                                 f'not (H, W, 3) uint8')
            writer.add_image(tag, picture, int(step), dataformats='HWC')
        self._write(write, step)

    def hparams(self, flags, metrics, step=None):
        """Record the run's options `flags` ({name: value}, or an argparse Namespace) with its
        `metrics` ({name: number}) for TensorBoard's HPARAMS tab, in this run's own folder.

        Numbers and strings are kept, bools become 'True'/'False' (TensorBoard would store them
        as 1.0/0.0), None becomes 'None', and anything else its str(). Each metric is also logged
        as a scalar named `name`, at `step` (default: the latest step logged): give metrics
        names no other scalar of the run uses, e.g. 'final/fid'.
        """
        def write(writer):
            from torch.utils.tensorboard.summary import hparams
            options = flags if isinstance(flags, dict) else vars(flags)
            options = {str(k): _hparam_value(v) for k, v in options.items()}
            measured = {str(k): float(v) for k, v in metrics.items()}
            at = self._step if step is None else int(step)
            # Not SummaryWriter.add_hparams: it writes into a new sub-folder named after the
            # time, which TensorBoard shows as a second run beside the real one.
            for summary in hparams(options, measured):
                writer.file_writer.add_summary(summary, at)
            for name, value in measured.items():
                writer.add_scalar(name, value, at)
        self._write(write, step)

    def flush(self):
        """Write what is queued to disk now."""
        self._write(lambda writer: writer.flush())

    def close(self):
        """Flush and close the event file; later calls do nothing."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
            self._raise_writer_thread_error()
        except Exception as e:
            self._fail(e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self, action, step=None):
        if self._writer is None:
            return
        try:
            # An error from the writer thread surfaces here, at the call after it happened.
            self._raise_writer_thread_error()
            action(self._writer)
            if step is not None:
                self._step = max(self._step, int(step))
        except Exception as e:
            self._fail(e)

    def _raise_writer_thread_error(self):
        if self._errors is not None and self._errors.error is not None:
            raise self._errors.error

    def _fail(self, error):
        reason = ' '.join(f'{type(error).__name__}: {error}'.split())
        print(f"warning: TensorBoard logging to {self.folder} stopped ({reason}); training goes "
              f"on without TensorBoard", file=sys.stderr, flush=True)
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass  # already reported: the log is off whatever closing it does


def _check_writable(folder):
    """Raise if a file cannot be written in `folder` (made if missing).

    SummaryWriter writes its first event from a background thread, whose failure would print a
    traceback before the error reaches this module; a folder that cannot take a file (under a
    regular file, read-only, on a full disk) is caught here first instead.
    """
    if '://' in folder:
        return  # a remote filesystem TensorBoard's own file layer handles
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder) as probe:
        probe.write(bytes(4096))
        probe.flush()


class _KeptError:
    """Stands between SummaryWriter's writer thread and its record writer, keeping the first
    error: an exception escaping that thread would print a traceback and end the thread, while
    the log should print one line and go on quietly."""

    def __init__(self, records):
        self.records = records
        self.error = None

    def write(self, data):
        self._call(self.records.write, data)

    def flush(self):
        self._call(self.records.flush)

    def close(self):
        try:
            self.records.close()
        except Exception as e:
            self.error = self.error or e

    def _call(self, method, *args):
        if self.error is None:  # after an error the file is suspect: later events are dropped
            try:
                method(*args)
            except Exception as e:
                self.error = e


def _keep_writer_thread_errors(writer):
    """Put a _KeptError around `writer`'s record writer; None if TensorBoard's internals, which
    this relies on, have changed (errors then still disable the log, with a traceback first)."""
    try:
        queue = writer.file_writer.event_writer._async_writer
        thread = queue._worker
        if thread._record_writer is not queue._writer:
            return None
    except AttributeError:
        return None
    kept = _KeptError(queue._writer)
    queue._writer = thread._record_writer = kept
    return kept


def _hparam_value(value):
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    return str(value)  # None -> 'None', lists, paths, ...: TensorBoard takes numbers and strings

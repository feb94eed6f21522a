"""The two generators the reference published, fetched once into a local cache."""
import os
import shutil
import tempfile

from core.cli import UserError, first_line
from storage.checkpoints import generator_state, load_checkpoint


# The generators the reference published (its test.py), as (label, address).
PUBLISHED_GENERATORS = (
    ('batch-norm recipe (reference, 200 epochs)',
     'https://www.dropbox.com/s/r33ndl969q83gik/batchnorm_ep200_weigths_gen.pt'),
    ('spectral-norm recipe (reference, 100 epochs)',
     'https://www.dropbox.com/s/tccxduyqp3dj5dg/spectralnorm_ep100_weights_gen.pt'),
)


def default_weights_cache():
    return os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'colorization-gan')


def fetch_published_generators(cache, published=None):
    """[(label, path)] of the reference's published generators (or of `published`, as (label,
    address) pairs) in `cache`, downloaded once. A download lands in a temporary folder and enters
    the cache only once it loads as a generator state dict, so the cache never holds an HTML page
    or a truncated file."""
    from torchvision.datasets.utils import download_url
    published = published or PUBLISHED_GENERATORS
    fetched = []
    for label, url in published:
        name = os.path.basename(url)
        path = os.path.join(cache, name)
        if not os.path.isfile(path):
            try:
                os.makedirs(cache, exist_ok=True)
                with tempfile.TemporaryDirectory() as folder:
                    # Dropbox answers a share address with an HTML page unless asked for the file.
                    download_url(url + ('&' if '?' in url else '?') + 'dl=1', folder, filename=name)
                    _check_generator_file(os.path.join(folder, name))
                    shutil.move(os.path.join(folder, name), path)
            except UserError as e:
                raise UserError(_unpublished(cache, published, str(e)))
            except Exception as e:
                raise UserError(_unpublished(cache, published, f"{url}: {first_line(e)}"))
        fetched.append((label, path))
    return fetched


def _check_generator_file(path):
    with open(path, 'rb') as f:
        start = f.read(512).lstrip().lower()
    if start.startswith(b'<'):  # <!DOCTYPE html>, <html>: no pickle or zip file starts so
        raise UserError(f"{os.path.basename(path)}: the server sent a web page, not the weights")
    state = load_checkpoint(path)  # UserError for a truncated or unsafe file
    generator_state(state, os.path.basename(path))


def _unpublished(cache, published, reason):
    addresses = ' and '.join(url for _, url in published)
    names = ', '.join(os.path.basename(url) for _, url in published)
    return (f"could not fetch the reference's published generators ({reason}); they are at {addresses}: "
            f"download them into {cache} ({names}), or score your own with --checkpoints")

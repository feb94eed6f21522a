"""The reference's published generators, fetched into a cache (test.py scoring them: tests/test_test.py)."""
import os

import pytest

from storage import published
from core.cli import UserError


@pytest.mark.parametrize('name, words', [('page.pt', 'web page'), ('cut.pt', 'corrupt, truncated'),
                                         ('missing.pt', '404')])
def test_a_bad_answer_is_one_line_and_leaves_nothing_in_the_cache(weights_server, tmp_path, name, words):
    served = (('batch-norm recipe', f'{weights_server}/{name}'), ('spectral-norm recipe', f'{weights_server}/sn.pt'))
    cache = tmp_path / 'cache'
    with pytest.raises(UserError) as e:
        published.fetch_published_generators(str(cache), served)
    message = str(e.value)
    assert words in message and f'{weights_server}/{name}' in message and f'{weights_server}/sn.pt' in message
    assert str(cache) in message and '--checkpoints' in message
    assert not os.path.exists(cache) or os.listdir(cache) == []

"""One torch thread for a block of test code, with the count restored after it.

A count left changed makes every later test module of the process train differently (conftest.py
fails such a module); fixtures that want one thread use this instead of setting it by hand.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_torch_thread():
    """Run the block on one torch thread; the previous count comes back afterwards, also on error."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

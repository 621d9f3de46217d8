"""``bench`` is not part of the installed package: it is imported from the checkout.

Appended, not prepended: the checkout's top-level ``codecs`` folder must not shadow the
standard library's module (see ``tests/test_layout.py``).
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.append(ROOT)

"""The test suite. Its helper modules (``tests/_*.py``) get their asserts rewritten as the
test modules do, so that a check failing inside a helper explains itself."""

from pathlib import Path

import pytest

pytest.register_assert_rewrite(
    *(f"{__name__}.{path.stem}" for path in Path(__file__).parent.glob("_[!_]*.py"))
)

"""Text that every part of the mesh can encode: no lone surrogates.

JSON lets `"\\udc00"` through and Python keeps it in a `str`, but UTF-8 cannot encode it: the
tokenizer, the router's encoder, Redis and even the error handler fail on it later, as 500s far
from the request. Refusing it at the boundary (request bodies, manifests) makes it a clear 400.
"""

from __future__ import annotations

import json
from typing import Any

SURROGATE_ERROR = (
    "text must be valid Unicode: lone surrogate code points (such as \\udc00) are not allowed"
)


def check_encodable(data: Any) -> None:
    """Raise ValueError when a string anywhere in `data` cannot be encoded as UTF-8."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(SURROGATE_ERROR) from None
    except (TypeError, ValueError, RecursionError):
        return  # not JSON-shaped: the model's own validation says what is wrong

"""Which function computes each pixel-based signal.

Digest signals are computed from bytes by ``hashers.digests``; every signal
whose source is "pixels" has one entry here, taking the decoded (H, W, 3)
uint8 RGB array and returning (hash bytes, quality or None).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from appliance.hashers.pdq import pdq_from_rgb

PixelHasher = Callable[[NDArray[np.uint8]], tuple[bytes, int | None]]

PIXEL_HASHERS: dict[str, PixelHasher] = {
    "pdq": pdq_from_rgb,
}

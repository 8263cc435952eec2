from typing import Final

import numpy as np
import numpy.typing as npt

from lltrade._gate import OrderGate

END: Final[int]
SLOW: Final[int]
REJECT: Final[int]
FULL: Final[int]

def decode_order(
    body: bytes | bytearray | memoryview,
) -> tuple[int, int, int, int, int, int, int, int, bool, int] | None: ...
def admit_frames(
    gate: OrderGate,
    slot: int,
    buf: bytearray,
    start: int,
    end: int,
    max_frame: int,
    last_seq: int,
    now_ns: int,
    commands: npt.NDArray[np.void],
    n: int,
    ref_seqs: npt.NDArray[np.int64],
) -> tuple[int, int, int, int, int, int]: ...

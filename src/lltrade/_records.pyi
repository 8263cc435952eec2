import numpy as np
import numpy.typing as npt

def frame_commands(buf: bytearray, rows: npt.NDArray[np.void], seq: int, recv_ns: int) -> int: ...

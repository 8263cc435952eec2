# cython: language_level=3
"""Argument checks of the ``def`` boundaries that take numpy arrays (one copy for every module).

``cdef inline``: each extension that cimports this compiles its own copy, and
must call ``cnp.import_array()``.  The dtype check tries identity first (the
daemon always passes the same dtype objects), then equality.
"""

cimport numpy as cnp


cdef inline Py_ssize_t checked_rows(cnp.ndarray arr, object dtype, str name, str dtype_name,
                                    bint writable) except -1:
    """Rows of a one-dimensional C-contiguous ``dtype`` array (writable if asked)."""
    if <object>cnp.PyArray_DESCR(arr) is not dtype and arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype lltrade.{dtype_name}, got {arr.dtype}")
    if cnp.PyArray_NDIM(arr) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be a one-dimensional C-contiguous array")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be writable")
    return cnp.PyArray_DIM(arr, 0)


cdef inline int checked_routes(cnp.ndarray routes, Py_ssize_t n, bint writable) except -1:
    """``routes`` is a C-contiguous int64 array of shape (>= n, 2) (writable if asked)."""
    if cnp.PyArray_TYPE(routes) != cnp.NPY_INT64:
        raise TypeError(f"routes must have dtype int64, got {routes.dtype}")
    if (cnp.PyArray_NDIM(routes) != 2 or cnp.PyArray_DIM(routes, 1) != 2
            or cnp.PyArray_DIM(routes, 0) < n or not cnp.PyArray_IS_C_CONTIGUOUS(routes)
            or (writable and not cnp.PyArray_ISWRITEABLE(routes))):
        raise ValueError(f"routes must be a {'writable ' if writable else ''}C-contiguous int64 "
                         f"array of shape (>= {n}, 2), got shape {(<object>routes).shape}")
    return 0

/*
 * lltrade_atomic.h: the few atomic operations lltrade's shared memory needs.
 *
 * Thin wrappers over the GCC/Clang __atomic builtins, so Cython code can call
 * them through `cdef extern` (lltrade/_telemetry.pxd) and a reader written in
 * C can include the same file.  Portable: nothing here is x86-specific.  On
 * x86-64 (TSO) every wrapper compiles to a plain MOV and the fences to compiler
 * barriers only; on arm64 an acquire load is LDAR, a release store STLR, the
 * acquire fence DMB ISHLD and the release fence DMB ISH.
 *
 * All pointers must be naturally aligned (8 bytes for the u64 forms): aligned
 * 64-bit loads and stores are single-copy atomic on both architectures, and
 * the static assertion below refuses a target where they would need a lock.
 */
#ifndef LLTRADE_ATOMIC_H
#define LLTRADE_ATOMIC_H

#include <stdint.h>

#if !defined(__GNUC__) && !defined(__clang__)
#error "lltrade_atomic.h needs the GCC or Clang __atomic builtins"
#endif

_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0),
               "lltrade telemetry needs lock-free 64-bit atomics");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the lltrade telemetry layout is little-endian");

/* 1 in the debug and sanitizer builds (setup.py defines LLTRADE_DEBUG and
 * keeps C asserts): the telemetry hot path then asserts its indexes. */
#if defined(LLTRADE_DEBUG) && !defined(NDEBUG)
#define LL_DEBUG 1
#else
#define LL_DEBUG 0
#endif

/* Loads. */
static inline uint64_t ll_load_acquire_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline uint64_t ll_load_relaxed_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline uint32_t ll_load_acquire_u32(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Stores. */
static inline void ll_store_release_u64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void ll_store_relaxed_u64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Fences.  Release: no load or store before it may be reordered with a store
 * after it.  Acquire: no load before it may be reordered with a load or store
 * after it. */
static inline void ll_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void ll_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

/* Index of the highest set bit of x; x must not be 0. */
static inline unsigned ll_log2_u64(uint64_t x) {
    return 63u - (unsigned)__builtin_clzll(x);
}

#endif /* LLTRADE_ATOMIC_H */

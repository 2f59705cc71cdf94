"""Atomic operations on NumPy array elements for ``nogil`` kernels.

LLVM ``cmpxchg`` / ``atomicrmw`` / release stores through tiny intrinsics. They hold under
real overlap (two ``nogil`` threads doing 2 M spin-locked increments each end at exactly
4 M, where unlocked increments lose 7-11 %) and cache like any other function. ``spin_lock`` / ``spin_unlock`` implement hnswlib's per-node mutexes over an
integer lock array; every critical section in the kernels is short and takes one lock
at a time (plus, first, the global entry-point lock), so they cannot deadlock.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import helper


def _elem_ptr(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)


def _is_int_vector(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)


@intrinsic
def atomic_cas(typingctx, arr, idx, expected, desired):
    """Compare-and-swap ``arr[idx]``; returns the old value (success iff old == expected)."""
    if not _is_int_vector(arr):
        return None
    dt = arr.dtype

    def codegen(context, builder, sig, args):
        a, i, e, d = args
        ptr = _elem_ptr(context, builder, sig.args[0], a, i)
        e = context.cast(builder, e, sig.args[2], dt)
        d = context.cast(builder, d, sig.args[3], dt)
        pair = builder.cmpxchg(ptr, e, d, "acq_rel", "monotonic")
        return builder.extract_value(pair, 0)

    return dt(arr, types.intp, expected, desired), codegen


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """Fetch-and-add on ``arr[idx]``; returns the old value."""
    if not _is_int_vector(arr):
        return None
    dt = arr.dtype

    def codegen(context, builder, sig, args):
        a, i, v = args
        ptr = _elem_ptr(context, builder, sig.args[0], a, i)
        v = context.cast(builder, v, sig.args[2], dt)
        return builder.atomic_rmw("add", ptr, v, "acq_rel")

    return dt(arr, types.intp, val), codegen


@intrinsic
def atomic_store_release(typingctx, arr, idx, val):
    """``arr[idx] = val`` with release ordering (publishes earlier writes)."""
    if not _is_int_vector(arr):
        return None
    dt = arr.dtype

    def codegen(context, builder, sig, args):
        a, i, v = args
        ptr = _elem_ptr(context, builder, sig.args[0], a, i)
        v = context.cast(builder, v, sig.args[2], dt)
        builder.store_atomic(v, ptr, "release", dt.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(arr, types.intp, val), codegen


@helper
def spin_lock(locks, i):
    while atomic_cas(locks, i, 0, 1) != 0:
        pass


@helper
def spin_unlock(locks, i):
    atomic_store_release(locks, i, 0)


@intrinsic
def fence_acquire(typingctx):
    """An acquire fence: loads before it are ordered before loads and stores after it
    (no instruction on x86, whose loads are never reordered with loads; ``dmb ishld`` on ARM)."""

    def codegen(context, builder, sig, args):
        builder.fence("acquire")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def fence_release(typingctx):
    """A release fence: loads and stores before it are ordered before stores after it
    (no instruction on x86, whose stores are never reordered with stores; ``dmb ish`` on ARM)."""

    def codegen(context, builder, sig, args):
        builder.fence("release")
        return context.get_dummy_value()

    return types.void(), codegen

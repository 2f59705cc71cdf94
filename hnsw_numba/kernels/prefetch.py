"""Software prefetch (LLVM ``llvm.prefetch``) of an array row, as hnswlib's ``_mm_prefetch``.

The graph walk knows the next neighbour's id before it needs the neighbour's vector and
visited tag; asking for their first cache lines early hides much of the memory latency
(the hardware prefetcher streams the rest of a row).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch", "prefetch_at", "prefetch_lines"]


def _row_start(context, builder, aty, a, idx):
    """An ``i8*`` to the start of row ``idx`` (an intp) of the array value ``a`` of type ``aty``."""
    ary = context.make_array(aty)(context, builder, a)
    zero = context.get_constant(types.intp, 0)
    ptr = cgutils.get_item_pointer(context, builder, aty, ary, [idx] + [zero] * (aty.ndim - 1), wraparound=False)
    return builder.bitcast(ptr, ir.IntType(8).as_pointer())


def _prefetch(builder, ptr):
    """``llvm.prefetch`` of the line holding ``ptr``: read, high temporal locality (T0), data cache."""
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch")
    builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


@intrinsic
def prefetch(typingctx, arr, i):
    """Prefetch the start of row ``i`` of ``arr`` (element ``i`` for a 1-D array) for reading."""
    if not isinstance(arr, types.Array) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        a, idx = args
        _prefetch(builder, _row_start(context, builder, sig.args[0], a, context.cast(builder, idx, sig.args[1], types.intp)))
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@intrinsic
def prefetch_at(typingctx, arr, i, offset):
    """Prefetch the cache line ``offset`` bytes into row ``i`` of a 2-D array."""
    if not isinstance(arr, types.Array) or not isinstance(i, types.Integer) or not isinstance(offset, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        a, idx, off = args
        row = _row_start(context, builder, sig.args[0], a, context.cast(builder, idx, sig.args[1], types.intp))
        _prefetch(builder, builder.gep(row, [context.cast(builder, off, sig.args[2], types.intp)]))
        return context.get_dummy_value()

    return types.void(arr, i, offset), codegen


@intrinsic
def prefetch_lines(typingctx, arr, i, start, nbytes):
    """Prefetch every cache line of bytes ``start .. nbytes - 1`` of row ``i`` of a 2-D array: at
    offsets ``start``, ``start + 64``, ... while within ``nbytes + 60``, the last one moved to byte
    ``nbytes - 1`` (a row of 4-byte items is 4-byte aligned, so an offset in its last 4 bytes is
    in its last line; ``nbytes`` >= 1, at most the row's bytes)."""
    if not isinstance(arr, types.Array) or not all(isinstance(t, types.Integer) for t in (i, start, nbytes)):
        return None

    def codegen(context, builder, sig, args):
        a, idx, first, n = args
        intp = context.get_value_type(types.intp)
        row = _row_start(context, builder, sig.args[0], a, context.cast(builder, idx, sig.args[1], types.intp))
        first = context.cast(builder, first, sig.args[2], types.intp)
        n = context.cast(builder, n, sig.args[3], types.intp)
        last = builder.sub(n, ir.Constant(intp, 1))
        with cgutils.for_range_slice(builder, first, builder.add(n, ir.Constant(intp, 60)), ir.Constant(intp, 64)) as (off, _):
            _prefetch(builder, builder.gep(row, [builder.select(builder.icmp_signed("<", off, last), off, last)]))
        return context.get_dummy_value()

    return types.void(arr, i, start, nbytes), codegen

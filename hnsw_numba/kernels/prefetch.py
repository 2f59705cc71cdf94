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


@intrinsic
def prefetch(typingctx, arr, i):
    """Prefetch the start of row ``i`` of ``arr`` (element ``i`` for a 1-D array) for reading."""
    if not isinstance(arr, types.Array) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        a, idx = args
        aty = sig.args[0]
        idx = context.cast(builder, idx, sig.args[1], types.intp)
        ary = context.make_array(aty)(context, builder, a)
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [idx] + [zero] * (aty.ndim - 1), wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch")
        # read, high temporal locality (T0), data cache
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@intrinsic
def prefetch_at(typingctx, arr, i, offset):
    """Prefetch the cache line ``offset`` bytes into row ``i`` of a 2-D array."""
    if not isinstance(arr, types.Array) or not isinstance(i, types.Integer) or not isinstance(offset, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        a, idx, off = args
        aty = sig.args[0]
        idx = context.cast(builder, idx, sig.args[1], types.intp)
        off = context.cast(builder, off, sig.args[2], types.intp)
        ary = context.make_array(aty)(context, builder, a)
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [idx] + [zero] * (aty.ndim - 1), wraparound=False)
        i8p = builder.gep(builder.bitcast(ptr, ir.IntType(8).as_pointer()), [off])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch")
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
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
        aty = sig.args[0]
        intp = context.get_value_type(types.intp)
        idx = context.cast(builder, idx, sig.args[1], types.intp)
        first = context.cast(builder, first, sig.args[2], types.intp)
        n = context.cast(builder, n, sig.args[3], types.intp)
        ary = context.make_array(aty)(context, builder, a)
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [idx] + [zero] * (aty.ndim - 1), wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch")
        last = builder.sub(n, ir.Constant(intp, 1))
        with cgutils.for_range_slice(builder, first, builder.add(n, ir.Constant(intp, 60)), ir.Constant(intp, 64)) as (off, _):
            at = builder.select(builder.icmp_signed("<", off, last), off, last)
            builder.call(fn, [builder.gep(i8p, [at]), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i, start, nbytes), codegen

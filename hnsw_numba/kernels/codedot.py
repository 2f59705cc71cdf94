"""Integer dot products of a sketch's uint8 codes with a query, four rows at a time, through
AVX-512 VNNI's ``vpdpbusd`` where the CPU has it.

``vpdpbusd`` multiplies 64 unsigned by 64 signed bytes and adds each four products into one of
16 int32 lanes, with no widening step. The sketch's int16 query (``|q16| <= QUERY_LIMIT``) is
therefore split into ``q16 = 128 qh + ql``, ``qh`` in [-128, 127] and ``ql`` in [0, 127]
(:func:`split_query`), and a row's sum is ``128 sum(u qh) + sum(u ql)``. Every step is modular
int32 arithmetic (no saturating instruction), so the result is the exact sum whenever that sum
fits an int32, which the query's scale guarantees, whatever the partial sums did.

Four rows share each load of the query and keep eight independent accumulator chains: one row
at a time waits on its own chain of ``vpdpbusd`` latencies. Deciding numbers (AMD EPYC Zen 5,
384-d codes, best of 50): 1,000 / 2,000 / 4,000 / 10,000 rows 7.5 / 12.0 / 29.4 / 73.0 us with
the int16 loop (``vpmovzxbw`` + ``vpmaddwd``), 4.6 / 9.1 / 20.1 / 48.1 us with ``vpdpbusd`` one
row at a time, 2.9 / 5.5 / 17.6 / 37.7 us four rows at a time.

Without VNNI (other x86 CPUs, ARM) the sketch keeps its int16 loop (``VNNI`` is False); the
intrinsic then still compiles, to plain widening vector code LLVM lowers for the target, so no
CPU is ever asked for an instruction it lacks.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

from .jit import helper

__all__ = ["VNNI", "QUERY_LIMIT", "make_dot4", "dot4", "split_query", "code_dots"]

#: The largest ``|q16|`` :func:`split_query` can split into two signed bytes.
QUERY_LIMIT = 16383


def _target_features() -> set[str]:
    """The CPU features Numba compiles for: ``NUMBA_CPU_FEATURES``, else the host's as Numba
    reads them (``NUMBA_ENABLE_AVX=0`` removes the AVX family)."""
    from numba.core.codegen import get_host_cpu_features

    features = config.CPU_FEATURES
    return set((features if features is not None else get_host_cpu_features()).split(","))


#: Whether kernels compile ``vpdpbusd`` (512-bit AVX-512 VNNI).
VNNI = {"+avx512f", "+avx512bw", "+avx512vnni"} <= _target_features()


def make_dot4(vnni: bool) -> object:
    """An intrinsic ``dot4(codes, c, qh, ql, n, out, o)``: ``out[o + r] = sum_j codes[c + r, j]
    (128 qh[j] + ql[j])`` over ``j < n`` for ``r`` = 0 .. 3 (int32, modular). ``codes``: uint8
    C-contiguous 2-D; ``qh`` / ``ql``: int8, contiguous; ``n`` a multiple of 64 within the
    rows; the caller keeps ``c + 3`` and ``o + 3`` in bounds. ``vnni`` chooses ``vpdpbusd`` or
    plain widening vector code (every target)."""

    @intrinsic
    def dot4(typingctx, codes, c, qh, ql, n, out, o):
        u8, i8 = types.uint8, types.int8
        if not (isinstance(codes, types.Array) and codes.dtype == u8 and codes.ndim == 2 and codes.layout == "C"):
            return None
        for half in (qh, ql):
            if not (isinstance(half, types.Array) and half.dtype == i8 and half.ndim == 1 and half.layout == "C"):
                return None
        if not (isinstance(out, types.Array) and out.dtype == types.int32 and out.ndim == 1):
            return None
        if not all(isinstance(t, types.Integer) for t in (c, n, o)):
            return None

        def codegen(context, builder, sig, args):
            codes_v, c_v, qh_v, ql_v, n_v, out_v, o_v = args
            intp = context.get_value_type(types.intp)
            c_v, n_v, o_v = (context.cast(builder, v, t, types.intp) for v, t in zip((c_v, n_v, o_v), (sig.args[1], sig.args[4], sig.args[6])))
            byte, word = ir.IntType(8), ir.IntType(32)
            lanes = 16 if vnni else 64  # vpdpbusd sums four products a lane
            acc_t = ir.VectorType(word, lanes)
            bytes_t = ir.VectorType(byte, 64)
            cary = context.make_array(sig.args[0])(context, builder, codes_v)
            stride = builder.extract_value(cary.strides, 0)
            first = builder.gep(builder.bitcast(cary.data, byte.as_pointer()), [builder.mul(c_v, stride)])
            rows = [builder.gep(first, [builder.mul(ir.Constant(intp, r), stride)]) for r in range(4)]
            halves = [builder.bitcast(context.make_array(sig.args[i])(context, builder, v).data, byte.as_pointer()) for i, v in ((2, qh_v), (3, ql_v))]
            accs = [cgutils.alloca_once_value(builder, ir.Constant(acc_t, None)) for _ in range(8)]  # row r: 2r high, 2r + 1 low
            if vnni:
                dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc_t, [acc_t] * 3), "llvm.x86.avx512.vpdpbusd.512")

            def load(base, j):
                return builder.load(builder.bitcast(builder.gep(base, [j]), bytes_t.as_pointer()), align=1)

            with cgutils.for_range_slice(builder, ir.Constant(intp, 0), n_v, ir.Constant(intp, 64)) as (j, _):
                q = [load(h, j) for h in halves]
                if vnni:
                    q = [builder.bitcast(v, acc_t) for v in q]
                else:
                    q = [builder.sext(v, acc_t) for v in q]
                for r in range(4):
                    u = load(rows[r], j)
                    u = builder.bitcast(u, acc_t) if vnni else builder.zext(u, acc_t)
                    for h in range(2):
                        acc = accs[2 * r + h]
                        if vnni:
                            builder.store(builder.call(dpbusd, [builder.load(acc), u, q[h]]), acc)
                        else:
                            builder.store(builder.add(builder.load(acc), builder.mul(u, q[h])), acc)
            reduce_add = cgutils.get_or_insert_function(builder.module, ir.FunctionType(word, [acc_t]), f"llvm.vector.reduce.add.v{lanes}i32")
            oary = context.make_array(sig.args[5])(context, builder, out_v)
            for r in range(4):
                both = builder.add(builder.shl(builder.load(accs[2 * r]), ir.Constant(acc_t, [7] * lanes)), builder.load(accs[2 * r + 1]))
                ptr = cgutils.get_item_pointer(context, builder, sig.args[5], oary, [builder.add(o_v, ir.Constant(intp, r))], wraparound=False)
                builder.store(builder.call(reduce_add, [both]), ptr)
            return context.get_dummy_value()

        return types.void(codes, c, qh, ql, n, out, o), codegen

    return dot4


dot4 = make_dot4(VNNI)


@helper
def split_query(q16, qh, ql):
    """``q16 = 128 qh + ql`` (``qh`` / ``ql`` int8; ``|q16| <= QUERY_LIMIT``)."""
    for j in range(q16.shape[0]):
        v = np.int32(q16[j])
        qh[j] = np.int8(v >> 7)
        ql[j] = np.int8(v & 127)


# int16 operands and an int32 accumulator, pinned, and unsigned loop bounds: the loop then
# compiles to vpmaddwd (see distances._centered_dot_block).
@helper(locals={"acc": types.int32, "u": types.int16, "v": types.int16, "p": types.int32})
def _code_dot(codes, c, q16, lo, hi):
    acc = 0
    for k in range(np.uint64(lo), np.uint64(hi)):
        u = codes[c, k]
        v = q16[k]
        p = np.int32(u) * np.int32(v)
        acc += p
    return acc


@helper
def code_dots(codes, c0, c1, q16, qh, ql, dots):
    """``dots[c - c0] = sum_j codes[c, j] q16[j]`` (int32) for rows ``c0 .. c1 - 1``; ``qh`` /
    ``ql``: ``q16`` split (:func:`split_query`), read with VNNI."""
    d = codes.shape[1]
    c = c0
    if VNNI and d >= 64:
        wide = d - d % 64
        while c + 4 <= c1:
            dot4(codes, c, qh, ql, wide, dots, c - c0)
            if wide < d:
                for r in range(4):
                    dots[c + r - c0] += _code_dot(codes, c + r, q16, wide, d)
            c += 4
    for r in range(c, c1):
        dots[r - c0] = _code_dot(codes, r, q16, 0, d)

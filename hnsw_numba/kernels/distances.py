"""Distance kernels: one body for the float storage kinds, one for Qi8.

``dist_query(metric, rows, i, q)`` is the distance between stored row ``i`` and a float32
query ``q`` (``dist_query4`` the same for four rows in one pass over ``q``, ``dist_query_as4``
one row bit for bit as ``dist_query4`` scores it);
``dist_pair(metric, rows, a, b)`` between two stored rows; ``decode_row`` writes row ``i``
as float32 into a buffer. Each is an ``@overload`` resolved at typing time
by the row class, so a kernel compiles once per storage kind; the metric code is a runtime
branch taken once per call, outside the dimension loop.

Every kernel indexes the 2-D arrays directly (``x[i, k]``): a row view ``x[i]`` would cost an
atomic reference-count increment and decrement on every call, in the hottest loop there is.

Numba has no CPU float16 type and cannot type ml_dtypes arrays: f16 / bf16 are stored as
``uint16`` and widened by two intrinsics that LLVM vectorises (``vcvtph2ps``; zero-extend
and shift for bf16). float32, float16 and bfloat16 rows share each body, which converts
every stored element with its row type's intrinsic (the identity for float32): each row
type still gets its own specialisation, and its machine code is instruction for instruction
that of a body written for the type alone. Float accumulation is float32.

Qi8 (value = scale * (code - zero)):

* a float32 query is compared with the codes *asymmetrically*: the codes are widened to
  float32 (``vpmovsxbd`` + ``vcvtdq2ps``, vectorised) and nothing of the query is rounded;
* two stored rows (the neighbour selection of inserts) under inner product / cosine use
  an exact integer dot of the centred codes, ``sum((x - za) * (y - zb))``: both factors fit
  int16 (|code - zero| <= 255), so products are taken int16 x int16 -> int32 (``vpmaddwd``)
  and accumulated in int32 over blocks of ``QI8_BLOCK`` columns (at most 16384 * 255**2 < 2**31),
  then in int64. L2 between two rows with different scales needs three such sums
  (``sa**2 Sxx + sb**2 Syy - 2 sa sb Sxy``), which measured slower than the float32 loop, so
  L2 pairs stay float32.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .jit import JIT_OPTIONS, helper
from .layout import L2_CODE, BF16Rows, F16Rows, F32Rows, Qi8Rows, WalkRows

__all__ = ["dist_query", "dist_query4", "dist_query_as4", "dist_pair", "decode_row", "float_conv", "f16_to_f32", "bf16_to_f32", "f32_to_f32", "f32_bits", "bits_f32", "qi8_centered_dot", "QI8_BLOCK"]

#: Columns per int32 accumulation block of the Qi8 integer dot (no overflow: 16384 * 255**2 < 2**31).
QI8_BLOCK = 16384


@intrinsic
def f16_to_f32(typingctx, bits):
    """IEEE half bits (uint16) -> float32, exactly."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def bf16_to_f32(typingctx, bits):
    """bfloat16 bits (uint16) -> float32, exactly."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, sig, args):
        w = builder.zext(args[0], ir.IntType(32))
        w = builder.shl(w, ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(w, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def f32_bits(typingctx, x):
    """float32 -> its IEEE bits as uint32 (a bitcast: vectorises, unlike a branchy loop)."""
    if not (isinstance(x, types.Float) and x.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def bits_f32(typingctx, bits):
    """IEEE bits (uint32) -> float32."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def f32_to_f32(typingctx, x):
    """float32 -> float32 unchanged: float32 rows' conversion in the bodies float rows share."""
    if not (isinstance(x, types.Float) and x.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):
        return args[0]

    return types.float32(x), codegen


# int16 operands and an int32 accumulator, pinned: without ``locals`` Numba widens integer
# arithmetic to int64 and the loop compiles to vpmuldq instead of vpmaddwd (2x slower).
@helper(locals={"acc": types.int32, "u": types.int16, "v": types.int16, "p": types.int32})
def _centered_dot_block(codes, a, b, za, zb, lo, hi):
    acc = 0
    # unsigned columns: with a signed start Numba's negative-index wrap-around check
    # stays in the loop and LLVM gathers bytes one by one instead of vpmaddwd
    for k in range(np.uint64(lo), np.uint64(hi)):
        u = codes[a, k] - za
        v = codes[b, k] - zb
        p = np.int32(u) * np.int32(v)
        acc += p
    return acc


@helper
def qi8_centered_dot(codes, a, b, za, zb):
    """Exact ``sum((codes[a] - za) * (codes[b] - zb))`` as int64 (``za``, ``zb`` int16 in [-128, 127])."""
    d = codes.shape[1]
    total = np.int64(0)
    for lo in range(0, d, QI8_BLOCK):
        total += _centered_dot_block(codes, a, b, za, zb, lo, min(lo + QI8_BLOCK, d))
    return total


def _is(t, cls) -> bool:
    return isinstance(t, types.BaseNamedTuple) and t.instance_class is cls


def float_conv(rows):
    """The element -> float32 conversion of a float row type (None for Qi8 and others).

    The intrinsic is inlined into the shared body, so each row type compiles to its own
    loop (see the module docstring).
    """
    if _is(rows, F32Rows):
        return f32_to_f32
    if _is(rows, F16Rows) or _is(rows, WalkRows):  # WalkRows: field 0 is the float16 copy
        return f16_to_f32
    if _is(rows, BF16Rows):
        return bf16_to_f32
    return None


def dist_query(metric, rows, i, q):
    """Distance between stored row ``i`` and float32 query ``q`` (typed per row class)."""


def dist_query4(metric, rows, a, b, c, d, q):
    """``dist_query`` of rows ``a``, ``b``, ``c``, ``d`` at once (one pass over ``q``)."""


def dist_pair(metric, rows, a, b):
    """Distance between stored rows ``a`` and ``b``."""


def decode_row(rows, i, out):
    """Write stored row ``i`` as float32 into ``out``."""


@overload(dist_query, jit_options=JIT_OPTIONS)
def _dist_query(metric, rows, i, q):
    conv = float_conv(rows)
    if conv is not None:

        def impl(metric, rows, i, q):
            x = rows[0]
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(q.shape[0]):
                    d = q[k] - conv(x[i, k])
                    acc += d * d
                return acc
            for k in range(q.shape[0]):
                acc += q[k] * conv(x[i, k])
            return np.float32(1.0) - acc

        return impl
    if _is(rows, Qi8Rows):

        def impl(metric, rows, i, q):
            x = rows.codes
            s = rows.scale[i]
            z = np.float32(rows.zero[i])
            # code - z is an exact small integer in float32, so each stored value costs
            # one rounding (as in Qi8.dequantize); the centred form also avoids the
            # cancellation of s * (dot(q, x) - z * sum(q)) at the same instruction count.
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(q.shape[0]):
                    d = q[k] - s * (np.float32(x[i, k]) - z)
                    acc += d * d
                return acc
            for k in range(q.shape[0]):
                acc += q[k] * (np.float32(x[i, k]) - z)
            return np.float32(1.0) - s * acc

        return impl
    return None


@overload(dist_pair, jit_options=JIT_OPTIONS)
def _dist_pair(metric, rows, a, b):
    conv = float_conv(rows)
    if conv is not None:

        def impl(metric, rows, a, b):
            x = rows[0]
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(x.shape[1]):
                    d = conv(x[a, k]) - conv(x[b, k])
                    acc += d * d
                return acc
            for k in range(x.shape[1]):
                acc += conv(x[a, k]) * conv(x[b, k])
            return np.float32(1.0) - acc

        return impl
    if _is(rows, Qi8Rows):

        def impl(metric, rows, a, b):
            x = rows.codes
            sa = rows.scale[a]
            sb = rows.scale[b]
            if metric == L2_CODE:
                za = np.float32(rows.zero[a])
                zb = np.float32(rows.zero[b])
                acc = np.float32(0.0)
                for k in range(x.shape[1]):
                    d = sa * (np.float32(x[a, k]) - za) - sb * (np.float32(x[b, k]) - zb)
                    acc += d * d
                return acc
            dot = qi8_centered_dot(x, a, b, np.int16(rows.zero[a]), np.int16(rows.zero[b]))
            return np.float32(1.0) - sa * sb * np.float32(dot)

        return impl
    return None


@overload(decode_row, jit_options=JIT_OPTIONS)
def _decode_row(rows, i, out):
    conv = float_conv(rows)
    if conv is not None:

        def impl(rows, i, out):
            x = rows[0]
            for k in range(out.shape[0]):
                out[k] = conv(x[i, k])

        return impl
    if _is(rows, Qi8Rows):

        def impl(rows, i, out):
            x = rows.codes
            s = rows.scale[i]
            z = np.float32(rows.zero[i])
            for k in range(out.shape[0]):
                out[k] = s * (np.float32(x[i, k]) - z)

        return impl
    return None


@overload(dist_query4, jit_options=JIT_OPTIONS)
def _dist_query4(metric, rows, a, b, c, d, q):
    # Four rows per pass over the query: the query's loads are shared and the four rows'
    # loads are in flight together (random 384-d rows from L3: 71 against 94 ns a row).
    conv = float_conv(rows)
    if conv is not None:

        def impl(metric, rows, a, b, c, d, q):
            x = rows[0]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(q.shape[0]):
                    qk = q[k]
                    e0 = qk - conv(x[a, k])
                    e1 = qk - conv(x[b, k])
                    e2 = qk - conv(x[c, k])
                    e3 = qk - conv(x[d, k])
                    s0 += e0 * e0
                    s1 += e1 * e1
                    s2 += e2 * e2
                    s3 += e3 * e3
                return s0, s1, s2, s3
            for k in range(q.shape[0]):
                qk = q[k]
                s0 += qk * conv(x[a, k])
                s1 += qk * conv(x[b, k])
                s2 += qk * conv(x[c, k])
                s3 += qk * conv(x[d, k])
            one = np.float32(1.0)
            return one - s0, one - s1, one - s2, one - s3

        return impl

    def impl(metric, rows, a, b, c, d, q):  # Qi8: one row at a time
        return dist_query(metric, rows, a, q), dist_query(metric, rows, b, q), dist_query(metric, rows, c, q), dist_query(metric, rows, d, q)

    return impl


@helper
def dist_query_as4(metric, rows, i, q):
    """Row ``i``'s distance to ``q`` exactly as ``dist_query4`` computes it (bit for bit).

    ``dist_query``'s one-row loop is vectorised differently from the four-row one, so with
    reassociation and contraction its L2 distances may round to another last bit (every
    dimension from 4 up, measured). A walk that ranks a distance among ``dist_query4``'s
    takes it from here, so an exact duplicate ties with its copies (docs/design.md,
    "Exact duplicates"). It costs four rows' arithmetic: for one distance per walk, not a loop.
    """
    return dist_query4(metric, rows, i, i, i, i, q)[0]

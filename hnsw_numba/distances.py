"""Distance kernels, one implementation per storage kind.

``dist_query(metric, rows, i, q)`` is the distance between stored row ``i`` and a float32
query ``q``; ``dist_pair(metric, rows, a, b)`` between two stored rows; ``decode_row``
writes row ``i`` as float32 into a buffer. Each is an ``@overload`` resolved at typing time
by the row class, so a kernel compiles once per storage kind; the metric code is a runtime
branch taken once per call, outside the dimension loop. Accumulation is float32.

Numba has no CPU float16 type and cannot type ml_dtypes arrays: f16 / bf16 are stored as
``uint16`` and widened by two intrinsics that LLVM vectorises (``vcvtph2ps``; zero-extend
and shift for bf16).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._jit import JIT_OPTIONS
from .metrics import L2_CODE
from .rows import BF16Rows, F16Rows, F32Rows, Qi8Rows

__all__ = ["dist_query", "dist_pair", "decode_row", "f16_to_f32", "bf16_to_f32"]


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


def _is(t, cls) -> bool:
    return isinstance(t, types.BaseNamedTuple) and t.instance_class is cls


def dist_query(metric, rows, i, q):
    """Distance between stored row ``i`` and float32 query ``q`` (typed per row class)."""


def dist_pair(metric, rows, a, b):
    """Distance between stored rows ``a`` and ``b``."""


def decode_row(rows, i, out):
    """Write stored row ``i`` as float32 into ``out``."""


@overload(dist_query, jit_options=JIT_OPTIONS)
def _dist_query(metric, rows, i, q):
    if _is(rows, F32Rows):

        def impl(metric, rows, i, q):
            # Index the 2-D array directly: a row view would cost an atomic
            # reference-count increment and decrement on every call.
            x = rows.data
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(q.shape[0]):
                    d = q[k] - x[i, k]
                    acc += d * d
                return acc
            for k in range(q.shape[0]):
                acc += q[k] * x[i, k]
            return np.float32(1.0) - acc

        return impl
    if _is(rows, F16Rows):

        def impl(metric, rows, i, q):
            x = rows.bits[i]
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(q.shape[0]):
                    d = q[k] - f16_to_f32(x[k])
                    acc += d * d
                return acc
            for k in range(q.shape[0]):
                acc += q[k] * f16_to_f32(x[k])
            return np.float32(1.0) - acc

        return impl
    if _is(rows, BF16Rows):

        def impl(metric, rows, i, q):
            x = rows.bits[i]
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(q.shape[0]):
                    d = q[k] - bf16_to_f32(x[k])
                    acc += d * d
                return acc
            for k in range(q.shape[0]):
                acc += q[k] * bf16_to_f32(x[k])
            return np.float32(1.0) - acc

        return impl
    if _is(rows, Qi8Rows):

        def impl(metric, rows, i, q):
            x = rows.codes[i]
            s = rows.scale[i]
            z = rows.zero[i]
            if metric == L2_CODE:
                acc = np.float32(0.0)
                for k in range(q.shape[0]):
                    d = q[k] - s * (np.float32(x[k]) - z)
                    acc += d * d
                return acc
            # dot(q, s*(x - z)) = s * (dot(q, x) - z * sum(q))
            dot = np.float32(0.0)
            qs = np.float32(0.0)
            for k in range(q.shape[0]):
                dot += q[k] * np.float32(x[k])
                qs += q[k]
            return np.float32(1.0) - s * (dot - z * qs)

        return impl
    return None


@overload(dist_pair, jit_options=JIT_OPTIONS)
def _dist_pair(metric, rows, a, b):
    if _is(rows, F32Rows):

        def impl(metric, rows, a, b):
            x = rows.data  # no row views: each would cost a reference-count round trip
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(x.shape[1]):
                    d = x[a, k] - x[b, k]
                    acc += d * d
                return acc
            for k in range(x.shape[1]):
                acc += x[a, k] * x[b, k]
            return np.float32(1.0) - acc

        return impl
    if _is(rows, F16Rows) or _is(rows, BF16Rows):
        conv = f16_to_f32 if _is(rows, F16Rows) else bf16_to_f32

        def impl(metric, rows, a, b):
            x = rows.bits[a]
            y = rows.bits[b]
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(x.shape[0]):
                    d = conv(x[k]) - conv(y[k])
                    acc += d * d
                return acc
            for k in range(x.shape[0]):
                acc += conv(x[k]) * conv(y[k])
            return np.float32(1.0) - acc

        return impl
    if _is(rows, Qi8Rows):

        def impl(metric, rows, a, b):
            x = rows.codes[a]
            y = rows.codes[b]
            sa = rows.scale[a]
            sb = rows.scale[b]
            za = rows.zero[a]
            zb = rows.zero[b]
            acc = np.float32(0.0)
            if metric == L2_CODE:
                for k in range(x.shape[0]):
                    d = sa * (np.float32(x[k]) - za) - sb * (np.float32(y[k]) - zb)
                    acc += d * d
                return acc
            for k in range(x.shape[0]):
                acc += (np.float32(x[k]) - za) * (np.float32(y[k]) - zb)
            return np.float32(1.0) - sa * sb * acc

        return impl
    return None


@overload(decode_row, jit_options=JIT_OPTIONS)
def _decode_row(rows, i, out):
    if _is(rows, F32Rows):

        def impl(rows, i, out):
            x = rows.data[i]
            for k in range(out.shape[0]):
                out[k] = x[k]

        return impl
    if _is(rows, F16Rows) or _is(rows, BF16Rows):
        conv = f16_to_f32 if _is(rows, F16Rows) else bf16_to_f32

        def impl(rows, i, out):
            x = rows.bits[i]
            for k in range(out.shape[0]):
                out[k] = conv(x[k])

        return impl
    if _is(rows, Qi8Rows):

        def impl(rows, i, out):
            x = rows.codes[i]
            s = rows.scale[i]
            z = rows.zero[i]
            for k in range(out.shape[0]):
                out[k] = s * (np.float32(x[k]) - z)

        return impl
    return None

"""Relax rewrite: conv2d / conv2d_transpose / matmul with constant weights -> call_tir to the packed
kernels.

Runs before legalization, on the plain Relax ops the quantizer's realize step (int8 x int8 ->
int32) or the ONNX importer (float32) emits. Only calls whose every property the kernels support
are rewritten (static shapes, int8 operands with an int32 result or float32 throughout, NCHW/OIHW,
groups=1, constant weight); anything else keeps TVM's own lowering. The kernels are left
unscheduled and fusable, so FuseOps puts their elementwise epilogue into the same function and
`packed.schedule_fused` computes it inside the register tile.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import tvm
from tvm import relax

from worker.kernels import intrin, packed
from worker.kernels.isa import FMA32, ISA

_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_CONV2D_TRANSPOSE = tvm.ir.Op.get("relax.nn.conv2d_transpose")
_MATMUL = tvm.ir.Op.get("relax.matmul")
#: The global symbol of every packed kernel: ISA entry, dot product, a counter.
KERNEL_NAME = re.compile(r"tvmq_(?P<isa>[a-z0-9]+)_(?P<dot>[a-z0-9]+)_kernel_(?P<n>\d+)")


def kernel_counts(text: str) -> Counter[tuple[str, str]]:
    """(ISA, dot product) -> how many distinct packed kernels `text` (e.g. VMExecutable.as_text()) names."""
    return Counter((isa, dot) for isa, dot, _ in set(KERNEL_NAME.findall(text)))


def _static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


#: Operand dtype -> the result dtype the kernels produce for it.
_RESULT = {"int8": "int32", "float32": "float32"}


def _constant(expr: relax.Expr, dtype: str) -> np.ndarray | None:
    if isinstance(expr, tvm.ir.expr.Constant) and str(expr.ty.dtype) == dtype:
        return expr.value.numpy()
    return None


def _supported_dtypes(call: relax.Call, data: relax.Expr) -> bool:
    """int8 operands with an int32 result, or float32 throughout (and a target that has FMA)."""
    dtype = str(data.ty.dtype)
    return dtype in _RESULT and str(call.ty.dtype) == _RESULT[dtype]


def _ints(values: object) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


#: float32 represents every integer up to 2**24 exactly.
_FLOAT_EXACT = 2**24
#: The largest |int8 x int8| product.
_INT8_PRODUCT = 128 * 128


def _grouped_int8_in_float(call: relax.Call, weight: np.ndarray) -> relax.Expr | None:
    """A grouped (depthwise) int8 conv computed exactly in float32: every product and partial sum
    of a window of at most 2**24 / 128**2 = 1024 taps is an integer float32 holds exactly, and
    AVX2's float FMA runs on two pipes where the int32 multiply (vpmulld) takes four cycles.
    Stride 1 only: for strided windows the column-phase copies of a 4x larger float plane cost
    more than the multiply saves (measured on the MobileNet bench, Zen 1)."""
    attrs = call.attrs
    if weight[0].size * _INT8_PRODUCT > _FLOAT_EXACT or any(int(s) != 1 for s in attrs.strides):
        return None
    data = relax.op.astype(call.args[0], "float32")
    conv = relax.op.nn.conv2d(
        data,
        relax.const(weight.astype(np.float32)),
        strides=attrs.strides,
        padding=attrs.padding,
        dilation=attrs.dilation,
        groups=attrs.groups,
        out_dtype="float32",
    )
    return relax.op.astype(conv, "int32")


@relax.expr_functor.mutator
class _PackedRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, isa: ISA, dtypes: frozenset[str]) -> None:
        super().__init__(mod)
        self.isa = isa
        self.dtypes = dtypes
        self.count = 0
        self.rules = (
            (_CONV2D, self._conv2d),
            (_CONV2D_TRANSPOSE, self._conv2d_transpose),
            (_MATMUL, self._matmul),
        )

    def _emit_kernel(self, kernel: packed.Kernel, data: relax.Expr, out_shape: tuple[int, ...]) -> relax.Expr:
        name = f"tvmq_{kernel.isa.name}_{kernel.dot.name}_kernel_{self.count}"
        self.count += 1
        # private (no global symbol): FuseTIR drops it once fused, so the library holds only what runs
        gvar = self.builder_.add_func(kernel.func.without_attr("global_symbol"), name)
        args = [data, *(relax.const(c) for c in kernel.constants)]
        return relax.call_tir(gvar, args, relax.TensorType(out_shape, kernel.dot.acc_dtype))

    def _operands(self, call: relax.Call, kernel_layout: str) -> tuple[tuple[int, ...], np.ndarray] | None:
        """(data shape, constant weight) of a conv the kernels take: static, NCHW, our dtypes."""
        attrs = call.attrs
        data, weight = call.args
        shape, w = _static_shape(data), _constant(weight, data.ty.dtype)
        if (
            shape is None
            or w is None
            or str(data.ty.dtype) not in self.dtypes
            or not _supported_dtypes(call, data)
            or (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", kernel_layout, "NCHW")
        ):
            return None
        return shape, w

    def _conv2d(self, call: relax.Call) -> relax.Expr | None:
        attrs = call.attrs
        operands = self._operands(call, "OIHW")
        if operands is None:
            return None
        shape, w = operands
        data = call.args[0]
        if int(attrs.groups) != 1:
            return _grouped_int8_in_float(call, w) if str(data.ty.dtype) == "int8" else None
        pad = _ints(attrs.padding)
        pad = pad * 2 if len(pad) == 2 else pad
        kernel = packed.conv2d_nchw(shape, w, _ints(attrs.strides), pad, _ints(attrs.dilation), self.isa)
        out_shape = _static_shape(call)
        return None if out_shape is None else self._emit_kernel(kernel, data, out_shape)

    def _conv2d_transpose(self, call: relax.Call) -> relax.Expr | None:
        """Only the non-overlapping kind (stride = kernel, no padding): see packed.conv2d_transpose_nchw."""
        attrs = call.attrs
        operands = self._operands(call, "IOHW")
        out_shape = _static_shape(call)
        if operands is None or out_shape is None:
            return None
        shape, w = operands
        if (
            int(attrs.groups) != 1
            or _ints(attrs.strides) != tuple(w.shape[2:])
            or any(_ints(attrs.padding))
            or any(_ints(attrs.output_padding))
            or any(d != 1 for d in _ints(attrs.dilation))
        ):
            return None
        return self._emit_kernel(packed.conv2d_transpose_nchw(shape, w, self.isa), call.args[0], out_shape)

    def _matmul(self, call: relax.Call) -> relax.Expr | None:
        a, b = call.args
        shape, w = _static_shape(a), _constant(b, a.ty.dtype)
        out_shape = _static_shape(call)
        if shape is None or w is None or w.ndim != 2 or len(shape) < 2 or out_shape is None:
            return None
        if str(a.ty.dtype) not in self.dtypes or not _supported_dtypes(call, a):
            return None
        rows = int(np.prod(shape[:-1]))
        flat = a if len(shape) == 2 else self.builder_.emit(relax.op.reshape(a, (rows, shape[-1])))
        kernel = packed.matmul((rows, shape[-1]), w, self.isa)
        out = self._emit_kernel(kernel, flat, (rows, w.shape[1]))
        return out if len(shape) == 2 else relax.op.reshape(self.builder_.emit(out), out_shape)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        rule = next((r for op, r in self.rules if call.op.same_as(op)), None)
        new = rule(call) if rule is not None else None
        return call if new is None else new


def rewrite_packed(isa: ISA, with_float: bool) -> tvm.transform.Pass:
    """Replace supported int8 (and, `with_float`, float32) conv2d/matmul calls in every Relax
    function by kernels on `isa`."""
    dtypes = frozenset({"int8", "float32"} if with_float else {"int8"})

    @tvm.transform.module_pass(opt_level=0, name="tvmq.RewritePacked")
    def _rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        intrin.register(isa, (*isa.dots, FMA32) if with_float else isa.dots)
        rewriter = _PackedRewriter(mod, isa, dtypes)
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return _rewrite

"""The run-time side of a specialisation: the artifact refuses input values it was not built for.

An artifact specialised to `sr=16000` (see specialize.py) would otherwise take `sr=8000` and
silently compute the 16 kHz branch. `guard_pins` puts a check of every pinned input in front of
`main`'s body, so the call fails with a message naming the input and the value it was built for.
It is applied to the modules being built, after the quantizer (which reasons about one pure
dataflow block and must not see the impure assert).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker.errors import InternalError
from worker.frontend.specialize import Pin

if TYPE_CHECKING:
    import tvm


def guard_pins(mod: tvm.IRModule, pins: Sequence[Pin]) -> tvm.IRModule:
    """`mod` whose `main` first asserts each pinned input equals its value; `mod` itself if none."""
    if not pins:
        return mod
    import tvm
    from tvm import relax
    from tvm.relax import op as R

    main = mod["main"]
    params = {p.name: p for p in main.params}
    checks = []
    for pin in pins:
        if pin.input not in params:
            raise InternalError(f"pinned input '{pin.input}' is not a parameter of main")
        param = params[pin.input]
        same = relax.Var(f"{pin.input}_is_pinned", relax.TensorType((), "bool"))
        scalar = R.reshape(param, ()) if pin.shape else param  # a pin holds one element
        equal = R.equal(scalar, relax.const(pin.value, pin.dtype))
        message = (
            f"input '{pin.input}' must be {pin.value}: this artifact was specialised to that value "
            f"(every calibration sample had it; {', '.join(pin.branches)}); got {{}}"
        )
        checks += [
            relax.VarBinding(same, equal),
            relax.VarBinding(
                relax.Var(f"check_{pin.input}", relax.TupleType([])), R.assert_op(same, [param], message)
            ),
        ]
    body = main.body
    guarded = relax.SeqExpr([relax.BindingBlock(checks), *body.blocks], body.body)
    func = relax.Function(main.params, guarded, main.ret_ty, is_pure=False, attrs=main.attrs)
    out = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}, attrs=mod.attrs)
    out[mod.get_global_var("main")] = func
    return out

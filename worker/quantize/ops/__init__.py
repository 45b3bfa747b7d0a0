"""The op-rule registry: one `OpRule` per quantizable Relax op, registered by its family module.

Adding an op is one `register(OpRule(...))` call in the family module it belongs to (and its name
in worker.qconfig.QUANTIZABLE_OPS, the TVM-free copy the service validates with; a test compares).
"""

from __future__ import annotations

from worker.qconfig import accept_op
from worker.quantize.ops.base import OpRule

RULES: dict[str, OpRule] = {}


def register(rule: OpRule) -> OpRule:
    if rule.op in RULES:
        raise ValueError(f"op rule for {rule.op!r} registered twice")
    RULES[rule.op] = rule
    accept_op(rule.op)
    return rule


def rule_for(op: str | None) -> OpRule | None:
    return RULES.get(op) if op else None


# Family modules register their rules on import.
from worker.quantize.ops import (  # noqa: E402, F401
    activation,
    conv,
    dense,
    eltwise,
    layout,
    lut,
    normalization,
    pool,
)

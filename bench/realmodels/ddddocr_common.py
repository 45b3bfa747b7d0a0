"""What both ddddocr models share: the wheel, and data read out of its code without importing it."""

from __future__ import annotations

import ast

from bench.realmodels.wheels import Wheel

WHEEL = Wheel("ddddocr", "1.6.1")


def beta_charset() -> list[str]:
    """The charset of `common.onnx`: ddddocr's model_loader loads common.onnx for `beta=True`, and
    CharsetManager.load_default_charset then takes `_get_beta_charset()` (a list literal, index 0 is
    the CTC blank ""). Read with `ast` from models/charset_manager.py."""
    tree = ast.parse(WHEEL.member("ddddocr/models/charset_manager.py").read_text(encoding="utf-8"))
    function = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "_get_beta_charset"
    )
    returned = next(node for node in ast.walk(function) if isinstance(node, ast.Return))
    return list(ast.literal_eval(returned.value))

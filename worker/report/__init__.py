"""The verification report: schema, metrics, timing and HTML page (verify needs TVM)."""

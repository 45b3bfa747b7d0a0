"""The verification report: schema, metrics, timing and HTML page (integrality analysis needs TVM)."""

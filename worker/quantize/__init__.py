"""The quantization passes on Relax, one module per pipeline step (Relay relay.quantize rebuilt)."""

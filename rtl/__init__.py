"""The convcore engine in Amaranth. Every component here is emitted as plain Verilog."""

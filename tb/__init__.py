"""cocotb testbenches: drive the generated Verilog and compare with the golden model."""

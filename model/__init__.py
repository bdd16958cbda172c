"""The NumPy golden model: bit-exact with the hardware, importable without any simulator."""

"""What every test tier shares. Tests import from here; nothing here imports a test."""

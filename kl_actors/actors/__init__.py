"""The actors: one module per actor kind, the shell they share (`base`), the registry."""

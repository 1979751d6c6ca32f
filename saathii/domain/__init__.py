"""Domain rules, one module per concept."""

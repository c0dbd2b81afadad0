"""moalign's built-in objectives. Each module holds one family; the registry finds them through
the `moalign.objectives` entry points declared in pyproject.toml."""

"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class MoalignError(Exception):
    """Bad input or configuration. The message names the file, line, key or objective at fault."""


class ConfigError(MoalignError):
    """A configuration key is unknown, missing or has a bad value."""

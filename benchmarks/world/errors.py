"""The one error a world build raises: a part is missing or does not fit, with the fix in the message."""


class WorldError(RuntimeError):
    """A benchmark-world part is missing (install ``.[bench]``) or its weights do not fit the code."""

"""Why a file could not be inspected."""


class NotInspectable(Exception):
    """The file is not what its name or magic says, or is truncated or malformed: reported as
    such ("not inspectable: …"), never a crash and never a large read."""

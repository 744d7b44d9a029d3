"""One error type for everything a user can fix: the message says what and where."""


class PublishError(RuntimeError):
    """A publishing step cannot proceed (missing setting, bucket, role, image...)."""

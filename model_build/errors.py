"""One error type for everything a user can fix: the message says what and where."""


class PublishError(RuntimeError):
    """A publishing step cannot proceed (missing setting, bucket, role, image...)."""
    exit_code = 1


class EvaluationGateError(PublishError):
    """The evaluation is below a threshold: the model is not registered (exit status 3, so a build
    can tell "not good enough" from "could not run")."""
    exit_code = 3

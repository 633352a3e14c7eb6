"""The error every evaluation module raises for a request it cannot serve."""


class EvaluationError(ValueError):
  """An evaluation that cannot run as asked; the message is one line naming the fix."""

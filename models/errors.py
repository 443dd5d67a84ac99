"""The one error type the importer raises for bad input (the CLI turns it into exit code 2)."""


class ModelImportError(Exception):
    """A source that cannot become a stored model: the message names the problem in one line."""

"""Images in: built-in `datasets`, image `folder`s, hardened reading of image files (`images`), `augment`.
Pixels leave as uint8 tensors or floats in [0, 1]; `DataError`: a data problem a user causes, in one line."""


class DataError(ValueError):
    """A data folder or file is missing or malformed; the message is one line the CLI can print as is."""

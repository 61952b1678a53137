"""Images in: the built-in datasets (`datasets`), image folders (`folder`), hardened reading of any image file
(`images`) and the training augmentation (`augment`). Pixels leave this package as uint8 tensors or floats in
[0, 1]; `DataError` is every data problem a user can cause, said in one line."""


class DataError(ValueError):
    """A data folder or file is missing or malformed; the message is one line the CLI can print as is."""

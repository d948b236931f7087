"""Errors of the data pipeline that a user can cause and fix."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset was opened that is not prepared in the data directory.

    The message is one line and names the command that prepares it, e.g.
    `dataset 'posebh_synthetic' is not prepared in data/tfds; run: python -m data_pipeline.prepare synthetic
    --data_dir=data/tfds`.
    """

"""The project's exceptions that more than one floor raises: each says in one line what is wrong and
what to do, and the command line (resnet_tools.cli) prints that line. Imports nothing."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid TrainConfig field; the message lists the valid choices."""


class RanksDisagree(ConfigError):
    """Ranks of one distributed run were started with different settings or data; raised on every
    rank at the same point (resnet_tools.distributed.check_ranks_agree), so they can end together."""


class DataError(RuntimeError):
    """The data folder is missing, incomplete, corrupt or unsafe; the message says what to do."""

"""``python -m hes simulate|read ...``: the head-end commands without the hub CLI."""

from hes.cli import hes

hes()

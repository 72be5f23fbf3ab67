"""SFTP fixtures: see sftp_fixtures.py."""

from sftp_fixtures import sftp_server

__all__ = ["sftp_server"]

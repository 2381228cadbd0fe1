"""Seeing and steering an ensemble from outside its controller.

`ensemble status`, `ensemble action` and `ensemble report` read a run's state directory: a
running controller answers on a Unix socket there (and, when switched on, on a gRPC service
compatible with ensemble-python's), and a run that ended, or whose controller was killed, is read
from its state journal. Nothing here reaches into the controller's loop: the server calls only
its thread-safe API (`snapshot`, `request_action`, `member.describe`).
"""

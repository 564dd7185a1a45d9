"""Delivery channels, one module each, behind a common interface and a registry."""

from .base import Channel, SendResult, TransportError, channel_for

__all__ = ["Channel", "SendResult", "TransportError", "channel_for"]

"""The web side: signup with double opt-in, confirmation and unsubscribe (see DESIGN.md)."""

from double_optin.app import create_app
from double_optin.flow import Flow, Seen, TokenStatus

__all__ = ["Flow", "Seen", "TokenStatus", "create_app"]

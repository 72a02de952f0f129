"""The web side: signup with double opt-in, confirmation and unsubscribe (see DESIGN.md)."""

"""The in-app message API for client apps (DESIGN §3.2) and the widget demo page."""

"""Adapters: everything that touches the outside — store, CLI, logs, calendars, the demo."""

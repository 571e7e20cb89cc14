"""Processes seen from the client: the launched process, its terminal, launch requests."""

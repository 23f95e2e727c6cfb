"""Screens of the yoc app."""

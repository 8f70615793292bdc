"""Schedules, sensors and automation conditions that keep the warehouse current."""

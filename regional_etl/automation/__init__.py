"""Schedules and sensors that keep the warehouse current."""

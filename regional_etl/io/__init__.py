"""Reading and writing the landing zone and the Delta warehouse."""

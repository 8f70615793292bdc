"""Spark for the pipeline: the Spark Connect resource every run uses (`resource.py`), the local
Spark Connect server it reaches by default (`server.py` finds, starts and stops it,
`supervisor.py` is the process that owns its JVM) and the Delta jars that server loads
(`jars.py`)."""

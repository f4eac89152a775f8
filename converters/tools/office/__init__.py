"""LibreOffice: a cold headless run per job (soffice) and the worker's pool of warm, jailed
instances (pool, instance, jail, agent) that a job reaches through a door (broker, door)."""

"""Reference workloads built from seamline's parts: the 90-day contract-renewal agent first."""

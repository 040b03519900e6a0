"""Local stack launchers: a real Kafka broker and a real Triton server as
background processes on loopback, each with a state dir (pid, ports, logs)."""
